"""What the model predicts: single-label classes, multi-label tags or several heads, and their encoding.

A `Task` turns label columns of a table into target arrays, checks every value against the class
lists (naming the file, line and value otherwise), and converts targets to the soft (N, num_outputs)
form that mixup mixes. The model has ``task.num_outputs`` logits: for several heads they are the heads'
logits side by side, in the order of ``task.heads``.

- ``single``: one column of class names or indices -> int64 (N,); cross entropy.
- ``multilabel``: one column of space-separated tags (Planet style) -> float32 multi-hot (N, C); BCE.
- ``multihead``: several label columns (Bengali.AI's grapheme_root, vowel_diacritic, consonant_diacritic)
  -> int64 (N, heads); one cross entropy per head, weighted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

KINDS = ("single", "multilabel", "multihead")


@dataclasses.dataclass(frozen=True)
class Head:
    """One output head: the label column it is trained on and its class names (index = class id)."""

    column: str
    classes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Task:
    """The prediction task.

    Attributes:
        kind: ``"single"``, ``"multilabel"`` or ``"multihead"``.
        heads: one `Head` per label column (exactly one unless ``kind == "multihead"``).
        weights: loss (and metric) weight per head; equal weights by default.
    """

    kind: str
    heads: tuple[Head, ...]
    weights: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind != "multihead" and len(self.heads) != 1:
            raise ValueError(f"a {self.kind} task has one label column, got {[h.column for h in self.heads]}")
        if not self.weights:
            object.__setattr__(self, "weights", (1.0,) * len(self.heads))
        if len(self.weights) != len(self.heads):
            raise ValueError(
                f"--head-weights {','.join(map(str, self.weights))}: expected {len(self.heads)} weights, "
                f"one per label column {[h.column for h in self.heads]}"
            )

    @property
    def sizes(self) -> list[int]:
        """Number of classes of each head."""
        return [len(h.classes) for h in self.heads]

    @property
    def num_outputs(self) -> int:
        """Logits the model outputs: the sum of the head sizes."""
        return sum(self.sizes)

    @property
    def classes(self) -> list[str]:
        """The class list of a single-label or multi-label task (the first head's for multi-head)."""
        return list(self.heads[0].classes)

    def to_soft(self, y: torch.Tensor) -> torch.Tensor:
        """Targets as float (N, num_outputs): one-hot (single), multi-hot as is, one-hot per head side by side.

        Args:
            y: int64 (N,) for single, float (N, C) for multilabel, int64 (N, heads) for multihead; a float
                (N, num_outputs) tensor (already soft) is returned as float.
        """
        if y.is_floating_point() and y.ndim == 2 and y.shape[1] == self.num_outputs:
            return y.float()
        if self.kind == "single":
            return F.one_hot(y, self.num_outputs).float()
        if self.kind == "multilabel":
            return y.float()
        return torch.cat([F.one_hot(y[:, h], size).float() for h, size in enumerate(self.sizes)], dim=1)

    def encode(self, table: pd.DataFrame, where: str = "table", bad: list | None = None) -> np.ndarray:
        """Targets of every row of ``table`` (see the module doc for the dtype and shape of each kind).

        Args:
            table: rows with the label columns.
            where: the file the rows come from, for error messages.
            bad: when a list, bad rows do not raise: ``(row, message)`` is appended and the row's target
                is left at 0 (the caller drops those rows, ``--skip-bad``).

        Raises:
            ValueError: a label column is missing, a label is empty (NaN) or not in its class list; the
                message names the file, the line (header = line 1), the value and the expected classes.
        """
        for head in self.heads:
            require_columns(table, [head.column], where)
        report = _raise if bad is None else (lambda row, message: bad.append((row, message)))
        if self.kind == "multilabel":
            return self._encode_tags(table, where, report)
        codes = [_codes(table[h.column], h, where, report) for h in self.heads]
        return codes[0] if self.kind == "single" else np.stack(codes, axis=1)

    def _encode_tags(self, table: pd.DataFrame, where: str, report) -> np.ndarray:
        head = self.heads[0]
        index = {name: i for i, name in enumerate(head.classes)}
        targets = np.zeros((len(table), len(head.classes)), dtype=np.float32)
        for row, value in enumerate(table[head.column].tolist()):
            if _is_missing(value):
                report(row, f"{at(where, row)}: column {head.column!r} is empty; expected space-separated tags")
                continue
            for tag in str(value).split():
                if tag not in index:
                    report(
                        row,
                        f"{at(where, row)}: tag {tag!r} in column {head.column!r} is not in the class list "
                        f"({_describe(head.classes)})",
                    )
                    break
                targets[row, index[tag]] = 1.0
        return targets

    def to_dict(self) -> dict:
        """A JSON-able description, saved as ``classes.json`` in the run folder."""
        return {
            "kind": self.kind,
            "heads": [{"column": h.column, "classes": list(h.classes)} for h in self.heads],
            "weights": list(self.weights),
        }

    @classmethod
    def from_dict(cls, value: dict) -> Task:
        heads = tuple(Head(h["column"], tuple(h["classes"])) for h in value["heads"])
        return cls(value["kind"], heads, tuple(value.get("weights", ())))


def infer_task(
    table: pd.DataFrame,
    label_cols: Sequence[str],
    multilabel: bool = False,
    classes: Sequence[str] | None = None,
    head_weights: Sequence[float] | None = None,
    where: str = "table",
    skip_missing: bool = False,
) -> Task:
    """Builds the task from the label columns of the training table.

    Class lists are the given ``classes`` (single or multi-label) or the sorted distinct values of each
    column (numerically when every value is an integer, so '10' comes after '9').

    Args:
        table: the training rows.
        label_cols: one column (single or multi-label) or several (one head each).
        multilabel: the column holds space-separated tags.
        classes: the full class list, when the training rows may not show every class.
        head_weights: loss weight per label column (multi-head).
        where: the file the rows come from, for error messages.
        skip_missing: ignore empty labels (``--skip-bad`` drops those rows later) instead of raising.

    Raises:
        ValueError: a column is missing or has no labels, or the options contradict each other.
    """
    label_cols = list(label_cols)
    require_columns(table, label_cols, where)
    if len(table) == 0:
        raise ValueError(f"{where}: no rows; expected at least one labelled row")
    if len(label_cols) > 1:
        if multilabel or classes:
            raise ValueError("--multilabel and --classes apply to one label column; several columns make heads")
        heads = tuple(Head(c, _distinct(table[c], where, c, skip_missing)) for c in label_cols)
        return Task("multihead", heads, tuple(head_weights or ()))
    column = label_cols[0]
    if head_weights and len(head_weights) != 1:
        raise ValueError(f"--head-weights needs several --label-col columns, got only {column!r}")
    if classes is None:
        if multilabel:
            tags = {t for v in table[column].tolist() if not _is_missing(v) for t in str(v).split()}
            classes = _sorted_names(tags)
        else:
            classes = _distinct(table[column], where, column, skip_missing)
    if len(classes) < (1 if multilabel else 2):
        raise ValueError(f"{where}: column {column!r} has {len(classes)} class(es); expected at least 2")
    return Task("multilabel" if multilabel else "single", (Head(column, tuple(str(c) for c in classes)),))


def at(where, row: int) -> str:
    """Where row ``row`` (0-based) came from: ``where(row)`` for a `src.data.images.Locator`, else
    ``"<where> line <row + 2>"`` (line 1 is the CSV header)."""
    return where(row) if callable(where) else f"{where} line {row + 2}"


def require_columns(table: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    """Raises ValueError naming the missing columns and the ones the file has."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{where}: column(s) {missing} not found; the file has columns {list(table.columns)[:20]}")


def _codes(series: pd.Series, head: Head, where: str, report) -> np.ndarray:
    index = {name: i for i, name in enumerate(head.classes)}
    codes = np.zeros(len(series), dtype=np.int64)
    for row, value in enumerate(series.tolist()):
        if _is_missing(value):
            report(
                row,
                f"{at(where, row)}: column {head.column!r} is empty (NaN); expected one of {_describe(head.classes)}",
            )
            continue
        name = _name(value)
        if name not in index:
            report(
                row,
                f"{at(where, row)}: label {name!r} in column {head.column!r} is not in the class list "
                f"({_describe(head.classes)})",
            )
            continue
        codes[row] = index[name]
    return codes


def _raise(row: int, message: str) -> None:
    raise ValueError(message)


def _distinct(series: pd.Series, where: str, column: str, skip_missing: bool = False) -> tuple[str, ...]:
    values = series.tolist()
    for row, value in enumerate(values):
        if _is_missing(value) and not skip_missing:
            raise ValueError(f"{at(where, row)}: column {column!r} is empty (NaN); expected a label")
    return _sorted_names({_name(v) for v in values if not _is_missing(v)})


def _name(value) -> str:
    """A label as a class name: 3, 3.0 and '3' are all '3'."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _sorted_names(names) -> tuple[str, ...]:
    names = list(names)
    if all(n.lstrip("-").isdigit() for n in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value)


def _describe(classes: Sequence[str]) -> str:
    shown = ", ".join(map(repr, classes[:10]))
    return f"{len(classes)} classes: {shown}{', ...' if len(classes) > 10 else ''}"
