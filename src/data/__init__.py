"""Data in: layout readers, images and strokes, folds, sampling, batch augmentation, metadata, pseudo-labels,
distillation targets."""
