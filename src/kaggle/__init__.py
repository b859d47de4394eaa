"""Kaggle itself: download a competition, read its folder into a config, submit, and bundle a run for an offline
code competition (`python -m src.kaggle --help`; README "From Kaggle and back")."""
