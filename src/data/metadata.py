"""Image + metadata inputs (``--meta-cols age,sex,site``): the table columns encoded as numbers, and the small MLP
whose output is fused with the image embedding before the classifier.

The encoding is fitted on the train fold only (SIIM-ISIC melanoma's patient age, sex and site; Recursion's cell
type, plate and site):

- a column whose values all read as numbers is standardised with the train fold's mean and standard deviation;
- any other column is one-hot encoded over the train fold's categories; a category the train fold never saw
  encodes as all zeros and is counted in a warning;
- every column gets a missing flag (1 where the value is missing); a missing number is imputed with the train
  fold's mean (0 after standardising), a missing category encodes as all zeros.

scikit-learn's `StandardScaler`, `OneHotEncoder(handle_unknown="ignore")` and `MissingIndicator` do each step, but
their fitted state is a pickle, which checkpoints loaded with ``torch.load(weights_only=True)`` cannot hold; the
encoder here keeps a JSON-able state instead, which the model keeps in its state dict (`MetaNet`'s extra state), so
every checkpoint carries the encoding its weights were trained with.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

logger = logging.getLogger(__name__)

META_HIDDEN = 64  # width of the metadata MLP's output, concatenated to the image embedding


def _is_numeric(values: pd.Series) -> bool:
    """Whether every present value reads as a number (tables are read as text, so '42' counts)."""
    present = values.dropna()
    if pd.api.types.is_bool_dtype(values) or not len(present):
        return False
    return bool(pd.to_numeric(present, errors="coerce").notna().all())


class MetaEncoder:
    """The metadata columns of a table as float32 features (N, width), fitted on the train fold (see the module doc).

    Args:
        columns: per column, ``{"name", "kind": "number", "mean", "std"}`` or ``{"name", "kind": "category",
            "categories"}``, in the order of the features.
    """

    def __init__(self, columns: Sequence[dict]):
        self.columns = [dict(column) for column in columns]

    @classmethod
    def fit(cls, table: pd.DataFrame, names: Sequence[str], rows: np.ndarray) -> MetaEncoder:
        """Fits on ``table``'s ``rows`` (the train fold) for the columns ``names``."""
        columns = []
        for name in names:
            values = table[name].iloc[rows]
            if _is_numeric(values):
                values = pd.to_numeric(values)
                mean, std = float(values.mean()), float(values.std(ddof=0))
                mean = 0.0 if math.isnan(mean) else mean
                columns.append({"name": name, "kind": "number", "mean": mean, "std": std if std > 0 else 1.0})
            else:
                categories = sorted(values.dropna().astype(str).unique().tolist())
                columns.append({"name": name, "kind": "category", "categories": categories})
        return cls(columns)

    @property
    def width(self) -> int:
        """Features per row: 2 per number (value, missing flag), categories + 1 per category column."""
        return sum(2 if c["kind"] == "number" else len(c["categories"]) + 1 for c in self.columns)

    def transform(self, table: pd.DataFrame, where: str = "the table") -> np.ndarray:
        """The features (N, width) float32 of every row of ``table``; unseen categories are counted in a warning.

        Raises:
            ValueError: a metadata column missing from ``table`` (named with ``where``).
        """
        missing = [c["name"] for c in self.columns if c["name"] not in table.columns]
        if missing:
            raise ValueError(f"{where}: no metadata column {', '.join(map(repr, missing))} (--meta-cols)")
        blocks = []
        for column in self.columns:
            values = table[column["name"]]
            absent = values.isna().to_numpy()
            if column["kind"] == "number":
                numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
                absent = np.isnan(numbers)
                value = np.where(absent, 0.0, (numbers - column["mean"]) / column["std"])
                blocks.append(np.stack([value, absent], axis=1))
                continue
            index = {category: k for k, category in enumerate(column["categories"])}
            codes = np.array([-1 if a else index.get(str(v), -2) for v, a in zip(values, absent)])
            onehot = np.zeros((len(values), len(index) + 1))
            onehot[codes >= 0, codes[codes >= 0]] = 1.0
            onehot[:, -1] = absent
            unseen = values[codes == -2].astype(str)
            if len(unseen):
                shown = ", ".join(repr(v) for v in sorted(unseen.unique())[:5])
                logger.warning(
                    "%s: %d rows of metadata column %r hold categories the train fold never saw (%s): encoded as "
                    "all zeros", where, len(unseen), column["name"], shown,
                )
            blocks.append(onehot)
        return np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((len(table), 0), np.float32)

    def to_dict(self) -> dict:
        return {"columns": self.columns}

    @classmethod
    def from_dict(cls, state: dict) -> MetaEncoder:
        return cls(state["columns"])


class MetaNet(nn.Module):
    """The metadata MLP: (N, width) float32 features -> (N, META_HIDDEN): linear -> BatchNorm -> ReLU -> dropout ->
    linear -> ReLU. Its encoder (`MetaEncoder`) is saved in the state dict as extra state.

    Args:
        width: input features (`MetaEncoder.width`).
        drop_rate: dropout probability between the layers.
    """

    def __init__(self, width: int, drop_rate: float = 0.2, encoder: MetaEncoder | None = None):
        super().__init__()
        self.width = width
        self.mlp = nn.Sequential(
            nn.Linear(width, META_HIDDEN),
            nn.BatchNorm1d(META_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(META_HIDDEN, META_HIDDEN),
            nn.ReLU(inplace=True),
        )
        self.encoder = encoder

    def forward(self, meta: torch.Tensor) -> torch.Tensor:
        return self.mlp(meta.float())

    def get_extra_state(self) -> dict:
        return {"encoder": self.encoder.to_dict() if self.encoder is not None else None}

    def set_extra_state(self, state: dict) -> None:
        self.encoder = MetaEncoder.from_dict(state["encoder"]) if state.get("encoder") else None


def meta_columns(table: pd.DataFrame, names: Sequence[str], where: str) -> None:
    """Checks that ``table`` has the metadata columns ``names``.

    Raises:
        ValueError: naming the table, the missing columns and the ones it has.
    """
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise ValueError(
            f"{where}: no column {', '.join(map(repr, missing))} for --meta-cols; its columns: "
            f"{', '.join(map(str, table.columns))}"
        )
