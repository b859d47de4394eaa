"""Albumentations pipelines: named train-time presets plus the deterministic resize (and normalise/to-tensor) steps.

Every pipeline maps a uint8 image (H, W, C) with any C (1 grey, 3 RGB, 6 for multi-channel microscopy) to uint8
pixels (img_size, img_size, C) where the image is decoded (`build_pixel_transforms`; the normalisation follows on
the model's device), or all the way to a float32 tensor (C, img_size, img_size), normalised per channel
(`build_transforms`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

LIGHT = {"scale": (0.9, 1.1), "translate": (-0.08, 0.08), "rotate": (-10.0, 10.0), "p": 0.8}
"""The ``light`` preset's affine: zoom factor, shift as a share of the side, degrees, probability (also the batch
pipeline's, `src.data.batch_augment.BatchAffine`)."""


def _light() -> list[A.BasicTransform]:
    # Small shifts, zooms and rotations; no flips, so it is safe for digits, text and other oriented images.
    return [
        A.Affine(
            scale=LIGHT["scale"],
            translate_percent=LIGHT["translate"],
            rotate=LIGHT["rotate"],
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            p=LIGHT["p"],
        )
    ]


PHOTO_FLIP = 0.5
"""The ``photo`` preset's probability of a horizontal flip (also the batch pipeline's)."""


def _photo() -> list[A.BasicTransform]:
    # The light warp, then a horizontal flip: for photographs, whose meaning a mirror keeps (not digits or text).
    return [*_light(), A.HorizontalFlip(p=PHOTO_FLIP)]


def _medium() -> list[A.BasicTransform]:
    # Stronger geometry plus local warps (elastic-style distortions help handwriting, Simard et al. 2003)
    # and one small erased patch; still no flips.
    return [
        A.Affine(
            scale=(0.85, 1.15),
            translate_percent=(-0.1, 0.1),
            rotate=(-15, 15),
            shear=(-10, 10),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            p=0.9,
        ),
        A.GridDistortion(num_steps=5, distort_limit=0.2, border_mode=cv2.BORDER_CONSTANT, p=0.3),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1, 0.25), hole_width_range=(0.1, 0.25), p=0.3),
    ]


def _heavy() -> list[A.BasicTransform]:
    # Medium plus photometric changes and noise, for large data sets and long schedules. Every transform
    # here works on any channel count (1, 3, 6); flips are left out because they change the meaning of
    # digits and text: add them with a pipeline file (``--aug my_aug.yaml``) for natural images.
    return [
        *_medium(),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
    ]


PRESETS: dict[str, Callable[[], list[A.BasicTransform]]] = {
    "none": list,
    "light": _light,
    "photo": _photo,
    "medium": _medium,
    "heavy": _heavy,
}


def load_pipeline_file(path: str | Path) -> list[A.BasicTransform]:
    """Transforms from an albumentations pipeline saved with ``A.save(pipeline, path)`` (YAML or JSON).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an albumentations pipeline; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--aug {path}: no such augmentation file")
    data_format = "yaml" if path.suffix in (".yaml", ".yml") else "json"
    try:
        pipeline = A.load(str(path), data_format=data_format)
    except Exception as error:  # albumentations raises KeyError/ValueError/yaml errors for bad files
        raise ValueError(
            f"--aug {path}: not an albumentations pipeline ({type(error).__name__}: {error}); "
            "write one with albumentations.save(A.Compose([...]), path)"
        ) from None
    return list(pipeline.transforms) if isinstance(pipeline, A.BaseCompose) else [pipeline]


def is_pipeline_file(aug: str) -> bool:
    return Path(aug).suffix in (".yaml", ".yml", ".json")


def build_pixel_transforms(
    img_size: int,
    aug: str = "none",
    seed: int | None = None,
    resize_mode: str = "resize",
    extra: Sequence[A.BasicTransform] = (),
) -> A.Compose:
    """Builds the pipeline that runs where the images are decoded: resize -> augmentation preset -> extra
    transforms, on uint8 pixels. The normalisation follows on the model's device (`src.data.batch_augment.DeviceStage`):
    a worker hands 4x fewer bytes to the GPU than as float32, and the GPU does the arithmetic.

    Args:
        img_size: side of the square output, pixels.
        aug: preset name from `PRESETS` (``"none"`` gives the deterministic valid/test pipeline), or the
            path of an albumentations pipeline file (YAML/JSON, `load_pipeline_file`) put in the preset's place.
        seed: seed of the pipeline's random draws.
        resize_mode: ``"resize"`` scales every image to img_size; ``"pad"`` first zero-pads smaller images
            (centred) up to img_size, so small images keep their pixels (MNIST 28 -> 32 as in LeNet-5).
        extra: deterministic transforms applied after the augmentation (a test-time augmentation variant).

    Returns:
        An `A.Compose` called as ``pipeline(image=img)["image"]``: uint8 (H, W, C) -> uint8 (img_size, img_size, C).

    Raises:
        ValueError: unknown preset or resize mode; the message lists the known ones.
        FileNotFoundError: a pipeline file that does not exist.
    """
    return A.Compose(_pixel_steps(img_size, aug, resize_mode, extra), seed=seed)


def build_transforms(
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    aug: str = "none",
    seed: int | None = None,
    resize_mode: str = "resize",
    extra: Sequence[A.BasicTransform] = (),
) -> A.Compose:
    """The whole pipeline on the CPU, in albumentations: `build_pixel_transforms`, then normalise -> tensor; the
    reference the split pipeline (pixels where decoded, normalisation on the device) is tested against.

    Args:
        img_size, aug, seed, resize_mode, extra: as `build_pixel_transforms`.
        mean: per-channel mean of pixel / 255, length C.
        std: per-channel standard deviation of pixel / 255, length C.

    Returns:
        An `A.Compose` called as ``pipeline(image=img)["image"]``: uint8 (H, W, C) -> float32 (C, img_size, img_size).

    Raises:
        ValueError: unknown preset or resize mode; the message lists the known ones.
        FileNotFoundError: a pipeline file that does not exist.
    """
    return A.Compose(
        [
            *_pixel_steps(img_size, aug, resize_mode, extra),
            A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
            ToTensorV2(),
        ],
        seed=seed,
    )


def _pixel_steps(
    img_size: int, aug: str, resize_mode: str, extra: Sequence[A.BasicTransform]
) -> list[A.BasicTransform]:
    """Pad (``resize_mode="pad"``) -> resize -> the preset or pipeline file ``aug`` -> ``extra``."""
    if resize_mode not in ("resize", "pad"):
        raise ValueError(f"unknown resize mode {resize_mode!r}; known: resize, pad")
    if is_pipeline_file(aug):
        augment = load_pipeline_file(aug)
    elif aug in PRESETS:
        augment = PRESETS[aug]()
    else:
        raise ValueError(f"unknown augmentation preset {aug!r}; known: {sorted(PRESETS)} or a .yaml/.json file")
    pad = [A.PadIfNeeded(img_size, img_size, border_mode=cv2.BORDER_CONSTANT, fill=0)] if resize_mode == "pad" else []
    return [*pad, A.Resize(img_size, img_size, interpolation=cv2.INTER_LINEAR), *augment, *extra]


def reseed(pipeline, key: tuple[int, ...]) -> None:
    """Seeds the draws of ``pipeline``'s next call from ``key`` (e.g. ``(seed, epoch, index)``, `src.data.sampling`),
    through albumentations' ``set_random_state``; a pipeline without random draws (``SequenceToTensor``) is left
    as it is.

    About 20 us per call: a numpy `Generator` from the key, and Python's `random.Random` seeded by its text.
    """
    if hasattr(pipeline, "set_random_state"):
        pipeline.set_random_state(np.random.default_rng(key), random.Random("/".join(map(str, key))))
