"""Sweeps (`python -m src.sweep`): the search space, the Optuna study its workers share, and its report."""
