"""Prediction files: one row per image with its id, fold, label(s) and per-class probabilities.

Each fold's run writes its valid fold's predictions (``valid_predictions.csv``, from the best checkpoint);
``--fold all`` gathers them into the out-of-fold file ``oof.csv`` (the file names: `src.tracking.rundir`). The same
format carries test predictions (without labels) for prediction and ensembling.

The files are wide (100k rows x 1,000 classes is 100 million numbers, 2 GB of text), so `write_predictions` formats
the probabilities with pyarrow, byte for byte as pandas' ``to_csv`` would, 4-6 times faster (benchmarks/scale.py).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from src.targets import Task, require_columns
from src.utils import files

CHUNK_VALUES = 1 << 19  # numbers formatted at a time, per thread: bounds the text held in memory (~50 MB)


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
    # not copied (pandas 3 copies an array by default): `write_predictions` reads the frame, and a copy of a whole
    # test set's probabilities (100k x 1,000: 800 MB) was the largest block of memory in src.predict
    return pd.concat([frame, pd.DataFrame(probs, columns=probability_columns(task), copy=False)], axis=1)


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


def write_predictions(frame: pd.DataFrame, path: str | Path) -> None:
    """``frame.to_csv(path, index=False)``, atomically (`src.utils.files.atomic_path`), byte for byte the same file.

    The float64 columns at the end of the frame (the probabilities of `predictions_frame`) are formatted by
    `float_text`, rows at a time on a few threads; the columns before them (id, fold, labels) by pandas itself.
    pandas formats each float with numpy's ``str`` (Dragon4, ~1 us a number: 25 s for the 20,000 x 1,000 valid
    predictions of one fold), which no faster pandas option reproduces. A frame without such columns, or whose
    leading columns hold a line break (pandas quotes it across lines), is written by pandas.
    """
    tail = len(frame.columns)
    while tail > 0 and frame.dtypes.iloc[tail - 1] == np.float64:
        tail -= 1
    head, values = frame.iloc[:, :tail], frame.iloc[:, tail:].to_numpy(np.float64)
    if tail == len(frame.columns) or not len(frame) or _line_breaks(head):
        files.write_csv(frame, path)
        return
    step = max(1, CHUNK_VALUES // values.shape[1])
    starts = list(range(0, len(frame), step))
    workers = min(4, os.cpu_count() or 1)  # pyarrow formats without the GIL

    def lines(start: int) -> pa.Buffer:
        return _lines(head.iloc[start : start + step], values[start : start + step])

    with files.atomic_path(path) as tmp, open(tmp, "wb") as out, ThreadPoolExecutor(workers) as pool:
        out.write(frame.iloc[:0].to_csv(index=False, lineterminator=os.linesep).encode())
        for window in range(0, len(starts), workers):  # a few chunks at a time: the text held stays bounded
            for text in pool.map(lines, starts[window : window + workers]):
                out.write(text)


def _line_breaks(head: pd.DataFrame) -> bool:
    return any(head[column].astype(str).str.contains("[\r\n]").any() for column in head.columns)


def _lines(head: pd.DataFrame, values: np.ndarray) -> pa.Buffer:
    """The CSV lines (utf-8) of rows whose leading columns are ``head`` (no line breaks) and float64 columns
    ``values`` (R, C)."""
    rows, columns = values.shape
    numbers = float_text(values.ravel())
    offsets = pa.array(np.arange(0, rows * columns + 1, columns, dtype=np.int32))
    text = pc.binary_join(pa.ListArray.from_arrays(offsets, numbers), ",")  # one string per row
    parts = [text, pa.scalar(os.linesep)]
    if len(head.columns):
        leading = head.to_csv(index=False, header=False, lineterminator=os.linesep).split(os.linesep)[:-1]
        if len(head.columns) == 1:  # pandas quotes an empty field only when it is the row's only one
            leading = ["" if line == '""' else line for line in leading]
        parts = [pa.array(leading, pa.string()), pa.scalar(","), *parts]
    lines = pc.binary_join_element_wise(*parts, "")
    _, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, np.int32)[[lines.offset, lines.offset + len(lines)]]
    return data.slice(int(bounds[0]), int(bounds[1] - bounds[0]))


def float_text(values: np.ndarray) -> pa.StringArray:
    """float64 values (flat) as pandas' ``to_csv`` writes them: numpy's ``str`` (Python's shortest repr: ``0.5``,
    ``1.0``, ``1e-05``), NaN as an empty field.

    pyarrow finds the same shortest digits (double-conversion) and writes 1e-4 <= x < 1e9 as Python does but for
    integers (``1``, not ``1.0``); it writes 1e-6 <= x < 1e-4 positionally (``0.00001``) and smaller numbers with a
    one-digit exponent (``1e-7``). Those are re-laid; any other number (negative, >= 1e9, infinite) takes numpy's
    own ``str``.
    """
    text = pc.cast(pa.array(values, pa.float64()), pa.string())
    with np.errstate(invalid="ignore"):  # NaN
        positional = (values >= 1e-4) & (values < 1e9)
        small = (values > 0) & (values < 1e-4)
        integral = positional & (values == np.floor(values))
    if integral.any():
        mask = pa.array(integral)
        text = pc.replace_with_mask(text, mask, pc.binary_join_element_wise(text.filter(mask), ".0", ""))
    other = ~(positional | small | np.isnan(values))
    if small.any():
        mask = pa.array(small)
        part = text.filter(mask)
        for zeros, exponent in (("0000", "05"), ("00000", "06")):  # 0.0000123 -> 1.23e-05
            part = pc.replace_substring_regex(part, rf"^0\.{zeros}([1-9])(\d*)$", rf"\1.\2e-{exponent}")
        part = pc.replace_substring_regex(part, r"\.e", "e")  # 1.e-05 -> 1e-05
        part = pc.replace_substring_regex(part, r"e-(\d)$", r"e-0\1")  # 1.5e-7 -> 1.5e-07
        text = pc.replace_with_mask(text, mask, part)
        laid_out = pc.match_substring_regex(part, r"^[1-9](\.\d+)?e-\d\d\d?$").to_numpy(zero_copy_only=False)
        other[np.flatnonzero(small)[~laid_out]] = True
    if other.any():
        text = pc.replace_with_mask(text, pa.array(other), pa.array(values[other].astype(str).tolist(), pa.string()))
    nan = np.isnan(values)
    if nan.any():
        text = pc.replace_with_mask(text, pa.array(nan), pa.array([""] * int(nan.sum()), pa.string()))
    return text
