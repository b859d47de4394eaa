"""Folds: which rows validate, as a seeded stratified K-fold split, the table's own fold column, or groups kept apart.

The assignment covers every row, so a debug fraction of the rows (`split_indices`) keeps the full run's folds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

from src.loaddata import Data, take_subset
from src.targets import Task, require_columns


def assign_folds(
    data: Data, folds: int, seed: int, group_col: str | None = None, fold_col: str | None = "fold"
) -> np.ndarray:
    """The fold of every row: the table's own ``fold_col`` when it has one, else `make_folds` (grouped by
    ``group_col`` when given). Returns int64 (N,) in [0, folds).

    Raises:
        ValueError: a missing group column, bad fold values, or a split that cannot be made.
    """
    table, where = data.source.table, data.source.where
    if fold_col and fold_col in table.columns:
        return read_fold_column(table, fold_col, folds, where)
    groups = None
    if group_col:
        require_columns(table, [group_col], where)
        groups = table[group_col].astype(str).to_numpy()
    return make_folds(data.task, data.targets, folds, seed, groups)


def make_folds(
    task: Task | None, targets: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Assigns each row to a validation fold, shuffled with ``seed`` (the same seed gives the same folds).

    Single-label targets use scikit-learn's `StratifiedKFold` (with groups, `StratifiedGroupKFold`);
    multi-label and multi-head targets use iterative stratification (Sechidis et al. 2011, the
    iterative-stratification package's `MultilabelStratifiedKFold`) on the concatenated one-hot targets
    (with groups, scikit-learn's shuffled `GroupKFold`, which keeps each group on one side).

    Args:
        task: the task of ``targets``; None means single-label int targets.
        targets: int64 (N,), float (N, C) multi-hot or int64 (N, heads).
        folds: number of folds, >= 2.
        seed: shuffling seed.
        groups: optional (N,) group labels (a plate, a patient): no group lands on both sides.

    Returns:
        int64 array (N,) of fold indices in [0, folds).

    Raises:
        ValueError: a class has fewer members than ``folds``, or fewer groups than folds.
    """
    single = task is None or task.kind == "single"
    fold_of = np.empty(len(targets), dtype=np.int64)
    dummy = np.zeros(len(targets))
    if groups is not None:
        n_groups = len(pd.unique(groups))
        if n_groups < folds:
            raise ValueError(f"--group-col: {n_groups} groups cannot fill {folds} folds; expected >= {folds} groups")
        splitter = (
            StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            if single
            else GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        )
        splits = splitter.split(dummy, targets if single else None, groups)
    elif single:
        counts = np.bincount(targets)
        too_small = [(c, int(n)) for c, n in enumerate(counts) if 0 < n < folds]
        if too_small:
            raise ValueError(
                f"stratified {folds}-fold split needs >= {folds} rows per class; (class, rows): {too_small}"
            )
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(dummy, targets)
    else:
        one_hot = task.to_soft(torch.as_tensor(targets)).numpy()
        splits = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(dummy, one_hot)
    for fold, (_, valid_idx) in enumerate(splits):
        fold_of[valid_idx] = fold
    return fold_of


def read_fold_column(table: pd.DataFrame, column: str, folds: int, where: str) -> np.ndarray:
    """The user's own fold assignment: integers in [0, folds), every fold present.

    Raises:
        ValueError: an empty, non-integer or out-of-range value (names the line), or a fold with no rows.
    """
    values = pd.to_numeric(table[column], errors="coerce").to_numpy()
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= folds)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{where} line {row + 2}: {column} = {table[column].iloc[row]!r}; expected an integer in [0, {folds}) "
            f"(--folds {folds})"
        )
    fold_of = values.astype(np.int64)
    empty = sorted(set(range(folds)) - set(fold_of.tolist()))
    if empty:
        raise ValueError(f"{where}: column {column!r} has no rows for fold(s) {empty} of --folds {folds}")
    return fold_of


def split_indices(
    fold_of: np.ndarray, fold: int, seed: int, fraction: float = 1.0, min_train: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Train and valid row indices of one fold, optionally cut to a fraction of each (debug runs).

    The folds are assigned on all rows, so a fraction keeps the same fold assignment as the full run.
    """
    train_idx, valid_idx = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    if fraction < 1.0:
        train_idx = take_subset(train_idx, max(math.ceil(fraction * len(train_idx)), min_train), seed)
        valid_idx = take_subset(valid_idx, max(math.ceil(fraction * len(valid_idx)), 1), seed + 1)
    return train_idx, valid_idx
