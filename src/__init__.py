"""Kaggle image-classification trainer built on PyTorch and pytorch-ignite."""
