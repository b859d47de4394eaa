"""QuickDraw strokes (``[[x...], [y...]]`` per stroke): parsed, rasterized at ``--img-size`` with the stroke
order as intensity (`StrokeImages`), or turned into (dx, dy, pen) point sequences for ``--arch gru``
(`StrokeSequences`)."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence

import cv2
import numpy as np

from src.data.images import ImageReader, Locator, PointSequences, subset_where
from src.targets import at


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
        part.drawings, part.where = [self.drawings[i] for i in rows], subset_where(self.where, rows)
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
