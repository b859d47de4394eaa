"""Folds: which rows validate, as a seeded stratified K-fold split, the table's own fold column, or groups kept apart.

The assignment covers every row, so a debug fraction of the rows (`split_indices`) keeps the full run's folds.
Multi-label rows are split by iterative stratification: Sechidis, Tsoumakas and Vlahavas 2011, "On the
Stratification of Multi-Label Data" (https://doi.org/10.1007/978-3-642-23808-6_10), as the iterative-stratification
package implements it (`MultilabelStratifiedKFold`), with its core step rewritten in `MultilabelFolds`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold
from sklearn.utils import check_random_state

from src.loaddata import Data, take_subset
from src.targets import Task, require_columns
from src.tracking import share
from src.tracking.rundir import FOLDS, first_file


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
    iterative-stratification package's `MultilabelStratifiedKFold`, its folds computed by `MultilabelFolds`) on the
    concatenated one-hot targets (with groups, scikit-learn's shuffled `GroupKFold`, which keeps each group on one
    side).

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
        splits = MultilabelFolds(n_splits=folds, shuffle=True, random_state=seed).split(dummy, one_hot)
    for fold, (_, valid_idx) in enumerate(splits):
        fold_of[valid_idx] = fold
    return fold_of


class MultilabelFolds(MultilabelStratifiedKFold):
    """iterative-stratification's `MultilabelStratifiedKFold` with the same folds, in time linear in the rows.

    The package's ``IterativeStratification`` recounts the unassigned rows of every label (an N x C sum) each time it
    takes the next label, and assigns each row with numpy calls on arrays of K folds: 55 s for 100,000 rows of 1,000
    tags on two cores. `iterative_stratification` is the same algorithm, step for step and drawing the same random
    numbers in the same order, with those counts kept up to date as rows are assigned and each row's labels read
    from a sparse index: the same folds (tests/test_folds.py compares them with the package's) in about 1 s. Only
    the package's ``_make_test_folds`` (the hook scikit-learn's `_BaseKFold` calls) is replaced; the input checks and
    the splitting stay the package's (pinned in requirements.txt).
    """

    def _make_test_folds(self, X, y) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 2 or y.shape[1] < 2:
            return super()._make_test_folds(X, y)  # the package's message: not a multilabel-indicator target
        rng = check_random_state(self.random_state)
        indices = np.arange(len(y))
        if self.shuffle:
            rng.shuffle(indices)
        rows, labels = np.nonzero(y)  # as np.asarray(y, dtype=bool), without the dense copies
        shuffled = np.argsort(indices)[rows]  # each label's row after the shuffle, y[indices]
        order = np.lexsort((labels, shuffled))
        r = np.asarray([1 / self.n_splits] * self.n_splits)
        test_folds = iterative_stratification(shuffled[order], labels[order], len(y), y.shape[1], r, rng)
        return test_folds[np.argsort(indices)]


def iterative_stratification(
    rows: np.ndarray, labels: np.ndarray, n_rows: int, n_labels: int, r: np.ndarray, rng: np.random.RandomState
) -> np.ndarray:
    """The package's ``IterativeStratification(labels, r, random_state)`` on a multi-hot matrix given by its
    nonzero entries.

    Takes the label with the fewest unassigned rows (ties broken at random), gives each of its unassigned rows to the
    fold that most lacks that label (ties: the fold that most lacks rows, then at random), and at the end spreads the
    rows without labels over the folds that most lack rows. Counts stay float64 as the package keeps them, so the
    ties are the same.

    Args:
        rows, labels: the nonzero entries (row, label) in row-major order (`np.nonzero`).
        n_rows, n_labels: the matrix's shape.
        r: float64 (K,) the share of the rows each fold gets.
        rng: the random state; drawn from exactly as the package does.

    Returns:
        int64 (n_rows,) the fold of every row.
    """
    test_folds = np.zeros(n_rows, dtype=int)
    per_row = np.bincount(rows, minlength=n_rows)
    row_start = np.concatenate([[0], np.cumsum(per_row)]).tolist()
    row_labels = labels.tolist()
    counts = np.bincount(labels, minlength=n_labels)
    by_label = rows[np.argsort(labels, kind="stable")].tolist()  # each label's rows in ascending order
    label_start = np.concatenate([[0], np.cumsum(counts)]).tolist()
    wanted_rows = (r * n_rows).tolist()  # c_folds: (K,) rows each fold still wants
    wanted = np.outer(r, counts).T.tolist()  # c_folds_labels, per label: (K,) rows of it each fold still wants
    left = counts.astype(np.int64)  # unassigned rows of each label
    assigned, unassigned = [False] * n_rows, n_rows
    folds = range(len(r))
    while unassigned:
        if not left.any():  # only rows without labels are left
            _spread_unlabelled(test_folds, [row for row in range(n_rows) if not assigned[row]], wanted_rows, rng)
            break
        fewest = np.flatnonzero(left == left[left > 0].min())
        label = fewest[rng.choice(len(fewest))] if len(fewest) > 1 else fewest[0]
        own = by_label[label_start[label] : label_start[label + 1]]
        for row in [row for row in own if not assigned[row]]:
            lacking = wanted[label]
            best = max(lacking)
            ties = [k for k in folds if lacking[k] == best]
            if len(ties) > 1:
                most = max(wanted_rows[k] for k in ties)
                tied = [i for i, k in enumerate(ties) if wanted_rows[k] == most]
                fold = ties[tied[rng.choice(len(tied))]] if len(tied) > 1 else ties[tied[0]]
            else:
                fold = ties[0]
            test_folds[row] = fold
            assigned[row], unassigned = True, unassigned - 1
            for other in row_labels[row_start[row] : row_start[row + 1]]:
                wanted[other][fold] -= 1
                left[other] -= 1
            wanted_rows[fold] -= 1
    return test_folds


def _spread_unlabelled(test_folds: np.ndarray, rows: list[int], wanted_rows: list, rng) -> None:
    """`iterative_stratification`'s last step: each row without labels, in order, to the fold that most lacks rows
    (ties at random, as the package draws them); updates ``test_folds`` and ``wanted_rows`` in place."""
    folds = range(len(wanted_rows))
    for row in rows:
        best = max(wanted_rows)
        ties = [k for k in folds if wanted_rows[k] == best]
        fold = ties[rng.choice(len(ties))] if len(ties) > 1 else ties[0]
        test_folds[row] = fold
        wanted_rows[fold] -= 1


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


def folds_from_run(data: Data, run: str | Path, folds: int, uri: str | None = None) -> np.ndarray:
    """``--folds-from RUN``: the fold of every row as another run assigned it (its ``folds.csv``: id, fold), so that
    runs trained apart (a teammate's) validate on the same rows and can be blended or distilled without a leak.
    ``run`` may be ``mlflow:<run-id>``, a shared run (`src.tracking.share.resolve_run`; ``uri``: the config's
    ``--mlflow``, else MLFLOW_TRACKING_URI).

    Returns:
        int64 (N,) in [0, folds), in the order of ``data``'s rows.

    Raises:
        FileNotFoundError: the run has no ``folds.csv``.
        ValueError: rows of this data the run does not have (the first named), or another number of folds.
    """
    path = first_file(share.resolve_run(run, uri), FOLDS)  # a --fold all run: its folds' (one split)
    if path is None:
        raise FileNotFoundError(f"--folds-from {run}: no {FOLDS} (a run folder of src.train, or a fold<k> of one)")
    table = pd.read_csv(path, dtype={"id": str})
    fold_of = dict(zip(table["id"], table["fold"].astype(np.int64)))
    ids = data.source.ids()
    missing = [i for i in ids if i not in fold_of]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise ValueError(f"--folds-from {run}: {len(missing)} of {len(ids)} rows are not in its {FOLDS} ({shown})")
    assigned = np.array([fold_of[i] for i in ids], dtype=np.int64)
    count = int(table["fold"].max()) + 1
    if count != folds:
        raise ValueError(f"--folds-from {run}: its {FOLDS} has {count} folds; pass --folds {count}")
    return assigned


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
