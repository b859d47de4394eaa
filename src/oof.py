"""Prediction files: one row per image with its id, fold, label(s) and per-class probabilities.

Each fold's run writes its valid fold's predictions (``valid_predictions.csv``, from the best checkpoint);
``--fold all`` gathers them into the out-of-fold file ``oof.csv`` (the file names: `src.rundir`). The same
format carries test predictions (without labels) for prediction and ensembling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.targets import Task, require_columns


def probability_columns(task: Task) -> list[str]:
    """``p_<class>`` per class (single, multilabel) or ``p_<column>_<class>`` per head and class (multihead),
    in the order of the model's outputs."""
    if task.kind == "multihead":
        return [f"p_{head.column}_{name}" for head in task.heads for name in head.classes]
    return [f"p_{name}" for name in task.classes]


def predictions_frame(
    ids: list[str], probs: np.ndarray, task: Task, folds: np.ndarray | None = None, labels: pd.DataFrame | None = None
) -> pd.DataFrame:
    """A prediction table: ``id``, optionally ``fold`` and the label columns, then the probability columns.

    Args:
        ids: the sample ids, length N.
        probs: float (N, num_outputs) probabilities (`src.metrics.to_probs`).
        task: the task (names the probability columns).
        folds: int (N,) validation fold of each row, or None.
        labels: the rows' label columns as in the training table, or None (test predictions).
    """
    frame = pd.DataFrame({"id": ids})
    if folds is not None:
        frame["fold"] = np.asarray(folds, dtype=np.int64)
    if labels is not None:
        for head in task.heads:
            frame[head.column] = labels[head.column].to_numpy()
    return pd.concat([frame, pd.DataFrame(probs, columns=probability_columns(task))], axis=1)


def read_predictions(
    path: str | Path, task: Task, with_targets: bool = True
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """Reads a prediction file back.

    Returns:
        The table, the probabilities float64 (N, num_outputs), and the encoded targets (`Task.encode`) when
        ``with_targets``, else None.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing id, label or probability column (named), or a label outside the class list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prediction file not found: {path}")
    label_columns = [head.column for head in task.heads] if with_targets else []
    frame = pd.read_csv(path, dtype={column: str for column in ["id", *label_columns]})
    require_columns(frame, ["id", *label_columns, *probability_columns(task)], str(path))
    probs = frame[probability_columns(task)].to_numpy(np.float64)
    targets = task.encode(frame, where=str(path)) if with_targets else None
    return frame, probs, targets


def rows_of(ids: list[str], wanted, where: str) -> np.ndarray:
    """The positions in ``ids`` of the ``wanted`` ids, int64 in ``wanted``'s order.

    Raises:
        ValueError: wanted ids that ``ids`` lacks (the first three named), prefixed with ``where``.
    """
    position = {image_id: row for row, image_id in enumerate(ids)}
    missing = [i for i in wanted if i not in position]
    if missing:
        raise ValueError(f"{where}: ids {missing[:3]} ({len(missing)} in all) are not there")
    return np.array([position[i] for i in wanted], dtype=np.int64)
