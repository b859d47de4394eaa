"""Image readers: ``reader[i]`` is a uint8 array (H, W, C) for row ``i`` of a layout's table. Every reader is an
`ImageReader` (its kind declared by its class: `PointSequences` for drawings read as point sequences); files are
decoded by OpenCV, JPEGs reduced while decoding when the training size allows (libjpeg's DCT scaling)."""

from __future__ import annotations

import abc
import dataclasses
import io
import os
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from src.targets import at


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
            [self.paths[i] for i in rows], self.grayscale, subset_where(self.where, rows), self.target_size
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


def in_memory(images: Sequence[np.ndarray]) -> ArrayImages:
    """Decoded images as one array when they share a shape (`ArrayImages`), else a list (`ListImages`)."""
    if len({im.shape for im in images}) == 1:
        return ArrayImages(np.stack(images))
    return ListImages(list(images))


def subset_where(where: Locator | str, rows) -> Locator | str:
    return where.subset(np.asarray(rows)) if isinstance(where, Locator) else where
