"""Test-time augmentation: named sets of deterministic variants of each image, and how to merge their predictions.

Sets (``--tta``): ``none``; ``flip`` (identity + horizontal flip); ``d4`` (the 8 symmetries of the square:
flips and transposes); ``multiscale`` (the image at 0.875, 1 and 1.125 times the model's size); or an
albumentations pipeline file, each of whose transforms (applied with p=1) is one variant beside the identity.
Merges (``--tta-merge``): ``mean`` of the probabilities, ``geometric`` mean, or ``max``; for softmax outputs the
geometric mean and the max are renormalised to sum to 1 (per head).
"""

from __future__ import annotations

import dataclasses
import itertools

import albumentations as A
import numpy as np

from src.augmentations import is_pipeline_file, load_pipeline_file
from src.targets import Task

TTA_SETS = ("none", "flip", "d4", "multiscale")
MERGES = ("mean", "geometric", "max")


@dataclasses.dataclass
class Variant:
    """One test-time view: a name, the transforms applied after the resize, and the image side in pixels."""

    name: str
    transforms: list[A.BasicTransform]
    img_size: int


def tta_variants(tta: str, img_size: int) -> list[Variant]:
    """The variants of a named set or pipeline file (see the module doc); the first is always the plain image.

    Raises:
        ValueError: an unknown set name (listing the known ones); a pipeline file that cannot be read.
    """
    if is_pipeline_file(tta):
        extra = load_pipeline_file(tta)
        for transform in extra:
            transform.p = 1.0
        return [Variant("none", [], img_size)] + [Variant(type(t).__name__, [t], img_size) for t in extra]
    if tta == "none":
        return [Variant("none", [], img_size)]
    if tta == "flip":
        return [Variant("none", [], img_size), Variant("hflip", [A.HorizontalFlip(p=1.0)], img_size)]
    if tta == "d4":
        variants = []
        for transpose, hflip, vflip in itertools.product((False, True), repeat=3):
            parts = [("transpose", A.Transpose(p=1.0)), ("hflip", A.HorizontalFlip(p=1.0))]
            parts.append(("vflip", A.VerticalFlip(p=1.0)))
            chosen = [part for part, on in zip(parts, (transpose, hflip, vflip)) if on]
            variants.append(Variant("+".join(n for n, _ in chosen) or "none", [t for _, t in chosen], img_size))
        return variants
    if tta == "multiscale":
        return [Variant(f"x{s}", [], round(img_size * s)) for s in (1.0, 0.875, 1.125)]
    raise ValueError(f"--tta {tta!r}: unknown; known: {', '.join(TTA_SETS)} or an albumentations .yaml/.json file")


def merge(probs: list[np.ndarray], how: str, task: Task) -> np.ndarray:
    """Combines the probabilities (N, num_outputs) of the variants (`Merge`, one after the other).

    Raises:
        ValueError: an unknown merge name.
    """
    merged = Merge(how, task, probs[0].shape, len(probs))
    for p in probs:
        merged.add(p)
    return merged.result()


class Merge:
    """The merge of ``variants`` variants' probabilities (``shape`` (N, num_outputs)), added one variant at a time,
    each whole or in blocks of rows: it holds one (N, num_outputs) float64 array however many variants there are,
    and never a whole variant besides. The variants are summed in their order onto zeros (onto -inf for the max),
    as numpy's mean over the stacked variants sums them, so the result is the same to the bit.

    Raises:
        ValueError: an unknown merge name.
    """

    def __init__(self, how: str, task: Task, shape: tuple[int, int], variants: int):
        if how not in MERGES:
            raise ValueError(f"--tta-merge {how!r}: unknown; known: {', '.join(MERGES)}")
        self.how, self.task, self.variants = how, task, variants
        # the sum (of the logs for geometric) or the maximum so far
        self.total = np.full(shape, -np.inf if how == "max" else 0.0)  # (N, num_outputs)

    def add(self, probs: np.ndarray, rows: slice = slice(None)) -> None:
        """Adds one variant's probabilities of ``rows`` (all rows by default): (rows, num_outputs)."""
        if self.how == "max":
            np.maximum(self.total[rows], probs, out=self.total[rows])
        else:
            self.total[rows] += np.log(np.clip(probs, 1e-15, 1.0)) if self.how == "geometric" else probs

    def result(self) -> np.ndarray:
        """The merged probabilities (N, num_outputs), computed in place of the sum (call it once); softmax outputs
        renormalised after a geometric mean or max."""
        merged = self.total
        if self.how != "max":
            merged /= self.variants
        if self.how == "geometric":
            np.exp(merged, out=merged)
        return merged if self.how == "mean" or self.task.kind == "multilabel" else renormalise(merged, self.task)


def renormalise(probs: np.ndarray, task: Task) -> np.ndarray:
    """Scales each head's probabilities (all outputs for a single-label task) to sum to 1 per row."""
    sizes = task.sizes if task.kind == "multihead" else [probs.shape[1]]
    parts = np.split(probs, np.cumsum(sizes)[:-1], axis=1)
    return np.concatenate([p / p.sum(axis=1, keepdims=True) for p in parts], axis=1)
