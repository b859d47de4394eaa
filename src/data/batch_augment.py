"""The train pipeline of the ``none``, ``light`` and ``photo`` presets on whole batches: per image only the resize
(or pad) where the image is decoded, then one random affine warp (and flip) and the normalisation for the batch in
torch on the model's device (``--batch-aug``, the default); and that device stage for every pipeline
(`DeviceStage`).

Why: albumentations transforms one image per call, and most of an `A.Affine` call is its per-call Python work
(~118 us of a ~190 us light pipeline per 32 px digit, while OpenCV's warp itself takes 9 us; NOTES 2026-11-30).
On 2 CPU cores the model uses both, so the in-process loader cannot hide behind the step and cost ~10% of an
epoch. Here the warp of a batch is one `torch.nn.functional.affine_grid` + `grid_sample` call. kornia's
`RandomAffine` does the same on batches but draws its parameters from torch's global generator per batch; the
draws here come from each sample's key ``(row, seed, epoch)`` (`src.data.sampling.EpochSampler`), as the per-image
pipeline's do (`src.augmentations.reseed`), so a sample's augmentation does not depend on the batch it is in, on
worker processes, on the number of processes, or on where a run resumed.

The affine has the semantics of the ``light`` preset's `A.Affine` (scale, translation as a share of the side,
rotation in degrees about the centre, zeros outside, bilinear), followed for ``photo`` by its `A.HorizontalFlip`;
the tests compare the two on fixed parameters.
Like albumentations, the shift is truncated to whole pixels and the warped image rounded to whole grey levels.
The other presets (local warps, dropout, photometric changes) and pipeline files stay per image in albumentations.

Where the work runs (NVIDIA DALI's and FFCV's split, in torch): the loader's workers decode, resize and draw, and
hand over uint8 `Pixels` (with each sample's warp matrix when augmenting); `DeviceStage` converts them to float,
warps and normalises them on the model's device after a pinned, non-blocking copy (`src.data.prefetch.DeviceLoader`).
A CPU core then does a quarter of the copies and none of the float arithmetic, and on the CPU the same code gives
the same numbers as the whole pipeline in one place did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from src.augmentations import LIGHT, PHOTO_FLIP

BATCHED_PRESETS = ("none", "light", "photo")


GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea and Flood 2014) on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def key_uniforms(keys: np.ndarray, draws: int) -> np.ndarray:
    """``draws`` uniforms in [0, 1) per row of ``keys`` (N, K) int64, each a hash of its key alone: float64 (N, draws).

    A counter-based generator (SplitMix64's mixing of the key's fields and the draw's index): numpy and torch seed
    one generator per key at ~25 us each, more than the warp of the image; this takes one vectorised pass.
    """
    state = np.zeros(len(keys), dtype=np.uint64)
    for field in np.ascontiguousarray(keys, dtype=np.int64).view(np.uint64).T:
        state = _mix(state ^ _mix(field + GOLDEN))
    counters = (np.arange(1, draws + 1, dtype=np.uint64) * GOLDEN)[None, :]
    return (_mix(state[:, None] + counters) >> np.uint64(11)).astype(np.float64) * 2.0**-53


class BatchAffine:
    """Random scale, translation and rotation per image of a batch, then a horizontal flip, drawn from each image's
    key: albumentations' ``Affine`` followed by ``HorizontalFlip`` (the ``photo`` preset; ``light`` flips nothing).

    Args:
        scale: range of the zoom factor.
        translate: range of the shift along each axis, as a share of that side.
        rotate: range of the rotation, degrees.
        p: probability that an image is warped.
        flip: probability that an image is mirrored left to right (0: never, and no draw for it).
        seed: seed of the draws for integer keys (a loader without `src.data.sampling.EpochSampler`).
    """

    def __init__(
        self,
        scale: tuple[float, float] = LIGHT["scale"],
        translate: tuple[float, float] = LIGHT["translate"],
        rotate: tuple[float, float] = LIGHT["rotate"],
        p: float = LIGHT["p"],
        flip: float = 0.0,
        seed: int | None = None,
    ):
        self.scale, self.translate, self.rotate, self.p, self.flip = scale, translate, rotate, p, flip
        self._rng = np.random.default_rng(seed)

    def draw(self, keys: Sequence) -> np.ndarray:
        """Per key, ``(warped, scale, shift x, shift y, degrees, flipped)``: float64 (N, 6); tuple keys ``(row, seed,
        epoch)`` decide their own draws (`key_uniforms`: the flip is the sixth, so the first five are the same with
        or without it), integer keys draw from the transform's generator."""
        draws = 6 if self.flip else 5
        if keys and isinstance(keys[0], tuple):
            uniform = key_uniforms(np.array(keys, dtype=np.int64), draws)
        else:
            uniform = self._rng.random((len(keys), draws))
        low = np.array([0.0, self.scale[0], self.translate[0], self.translate[0], self.rotate[0]])
        high = np.array([1.0, self.scale[1], self.translate[1], self.translate[1], self.rotate[1]])
        params = np.zeros((len(keys), 6))
        params[:, :5] = low + (high - low) * uniform[:, :5]
        params[:, 0] = uniform[:, 0] < self.p
        if self.flip:
            params[:, 5] = uniform[:, 5] < self.flip
        return params

    @staticmethod
    def theta(params: np.ndarray, height: int, width: int) -> torch.Tensor:
        """The (N, 2, 3) float32 matrices of `torch.nn.functional.affine_grid` (output -> input, normalised
        coordinates, ``align_corners=False``) of ``params`` rows ``(_, scale, shift x, shift y, degrees[, flipped])``.

        In pixels about the centre, an image is mapped by ``p_out = F (s R(a) p_in + t)``, with ``t = (tx W, ty H)``
        truncated to whole pixels and F the mirror ``diag(-1, 1)`` when flipped (else the identity); the grid needs
        the inverse, ``(s R(a))^-1 (F p_out - t)``, and normalised coordinates are pixels divided by (W/2, H/2).
        """
        scale, shift_x, shift_y, degrees = (torch.as_tensor(params[:, k], dtype=torch.float64) for k in range(1, 5))
        angle = -torch.deg2rad(degrees)  # positive degrees turn the image counter-clockwise on screen (y points down)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # (s R(a))^-1 = R(-a) / s
        half_w, half_h = width / 2, height / 2
        inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (N, 2, 2)
        to_pixels = torch.tensor([half_w, half_h], dtype=torch.float64)
        linear = inverse * to_pixels[None, None, :] / to_pixels[None, :, None]  # D^-1 M D
        if params.shape[1] > 5:  # D^-1 M F D = D^-1 M D F: the first column mirrored
            linear[:, :, 0] *= torch.as_tensor(1.0 - 2.0 * (params[:, 5] > 0), dtype=torch.float64)[:, None]
        shift = torch.stack([shift_x * width, shift_y * height], -1).trunc()  # whole pixels, as albumentations
        offset = -(inverse @ shift[..., None])[..., 0] / to_pixels  # -D^-1 M t
        return torch.cat([linear, offset[..., None]], -1).float()

    def matrices(self, keys: Sequence, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The warp of each key's image: float32 (N, 2, 3) `theta` matrices (the identity where none is drawn) and
        bool (N,) whether to warp; the warp itself runs on the model's device (`warp`)."""
        params = self.draw(keys)
        affine, flipped = params[:, 0] > 0, params[:, 5] > 0
        params[~affine, 1:5] = (1.0, 0.0, 0.0, 0.0)  # flipped only: no zoom, shift or turn
        theta = torch.zeros(len(keys), 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        moved = np.flatnonzero(affine | flipped)
        if len(moved):
            theta[moved] = self.theta(params[moved], height, width)
        return theta, torch.from_numpy(affine | flipped)


class Pixels(NamedTuple):
    """An image as it leaves the loader's workers: uint8 ``image`` (H, W, C), or (N, H, W, C) once batched. The
    conversion to float and the normalisation happen on the model's device (`DeviceStage`)."""

    image: torch.Tensor


class WarpedPixels(NamedTuple):
    """`Pixels` with the affine warp drawn for them (`BatchAffine.matrices`), done on the model's device: uint8
    ``image`` (H, W, C), float32 ``theta`` (2, 3), bool ``warped`` () (batched: a leading N on each)."""

    image: torch.Tensor
    theta: torch.Tensor
    warped: torch.Tensor


class BatchPipeline:
    """The train pipeline of the ``none``, ``light`` and ``photo`` presets for a batch of keys (and the evaluation
    pipeline of every run): per image the pad / resize of
    `src.augmentations.build_pixel_transforms` (OpenCV, as `A.PadIfNeeded` and `A.Resize` call it), then the draws
    of `BatchAffine` (None: no augmentation). The warp and the normalisation follow on the model's device
    (`DeviceStage`), after a pinned, non-blocking copy of uint8 pixels.

    Args:
        img_size: side of the square output, pixels.
        affine: the random warp, or None.
        resize_mode: ``"resize"`` or ``"pad"`` (see `src.augmentations.build_pixel_transforms`).
    """

    def __init__(self, img_size: int, affine: BatchAffine | None = None, resize_mode: str = "resize"):
        self.img_size, self.affine, self.resize_mode = img_size, affine, resize_mode

    def _resize(self, image: np.ndarray) -> np.ndarray:
        size = self.img_size
        if image.ndim == 2:
            image = image[..., None]
        height, width = image.shape[:2]
        if self.resize_mode == "pad" and (height < size or width < size):
            top, left = max(size - height, 0) // 2, max(size - width, 0) // 2
            pads = ((top, max(size - height - top, 0)), (left, max(size - width - left, 0)), (0, 0))
            image = np.pad(image, pads)
            height, width = image.shape[:2]
        if (height, width) != (size, size):
            channels = image.shape[2]
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
            image = image.reshape(size, size, channels)
        return image

    def __call__(self, images: Sequence[np.ndarray], keys: Sequence) -> list[Pixels | WarpedPixels]:
        """The pixels of each image, uint8 (img_size, img_size, C), with their drawn warp when augmenting."""
        pixels = [torch.from_numpy(np.ascontiguousarray(self._resize(image))) for image in images]
        if self.affine is None:
            return [Pixels(image) for image in pixels]
        theta, warped = self.affine.matrices(keys, self.img_size, self.img_size)
        return [WarpedPixels(*item) for item in zip(pixels, theta, warped)]


def warp(
    images: torch.Tensor, theta: torch.Tensor, warped: torch.Tensor, select_rows: bool | None = None
) -> torch.Tensor:
    """The warp of `BatchAffine` on float ``images`` (N, C, H, W) of grey levels 0..255 (in place on the CPU):
    bilinear, zeros outside, rounded to whole grey levels as albumentations' uint8 warp, by float32 ``theta``
    (N, 2, 3); rows not ``warped`` (bool (N,)) are returned as they are.

    On a GPU every row is sampled and the unwarped ones taken back with `torch.where`: selecting the warped rows
    first (``select_rows``, the default on the CPU: a fifth less work for the light preset) needs their count on the
    host, a wait for the device on every batch. The two give the same numbers (tested).
    """
    if images.device.type == "cpu" if select_rows is None else select_rows:
        index = torch.nonzero(warped).flatten()
        if len(index):
            grid = F.affine_grid(theta[index], [len(index), *images.shape[1:]], align_corners=False)
            images[index] = F.grid_sample(images[index], grid, "bilinear", "zeros", align_corners=False).round_()
        return images
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    sampled = F.grid_sample(images, grid, "bilinear", "zeros", align_corners=False).round_()
    return torch.where(warped[:, None, None, None], sampled, images)


class DeviceStage:
    """What a batch of `Pixels` becomes on the model's device: float32 (N, C, H, W), warped where drawn (`warp`),
    ``(x / 255 - mean) / std`` per channel (the arithmetic of albumentations' ``Normalize`` on uint8, so the same
    numbers as the whole pipeline on the CPU), in the channels-last memory format when asked. Anything else in the
    batch (targets, metadata, point sequences) is only moved to the device.

    Args:
        mean, std: per-channel statistics of pixel / 255, length C.
        channels_last: return images in the channels-last memory format (`--channels-last`).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = False):
        mean_255 = torch.tensor(mean, dtype=torch.float32).mul(255)[None, :, None, None]  # (1, C, 1, 1)
        scale = 1 / torch.tensor(std, dtype=torch.float32).mul(255)[None, :, None, None]
        self.channels_last = channels_last
        # per device, copied once: a copy from pageable host memory on every batch would wait for the GPU
        self._statistics = {torch.device("cpu"): (mean_255, scale)}

    def statistics(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean * 255, 1 / (std * 255))``, float32 (1, C, 1, 1) each, on ``device``."""
        if device not in self._statistics:
            self._statistics[device] = tuple(t.to(device) for t in self._statistics[torch.device("cpu")])
        return self._statistics[device]

    def images(self, pixels: Pixels | WarpedPixels) -> torch.Tensor:
        """Batched pixels (on any device) -> float32 (N, C, H, W) on that device."""
        x = pixels.image.permute(0, 3, 1, 2).float()  # (N, C, H, W) 0..255, channels-last memory
        if isinstance(pixels, WarpedPixels):
            x = warp(x, pixels.theta, pixels.warped)
        mean_255, scale = self.statistics(x.device)
        x = x.sub_(mean_255).mul_(scale)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def __call__(self, batch, device: torch.device, non_blocking: bool = False):
        """``batch`` (any nesting of tuples, lists and tensors, as collated) moved to ``device``, its pixels made
        images."""
        if isinstance(batch, Pixels | WarpedPixels):
            return self.images(type(batch)(*(t.to(device, non_blocking=non_blocking) for t in batch)))
        if isinstance(batch, torch.Tensor):
            return batch.to(device, non_blocking=non_blocking)
        if isinstance(batch, tuple | list):
            return type(batch)(self(item, device, non_blocking) for item in batch)
        return batch


def batched(aug: str) -> bool:
    """Whether the train augmentation ``aug`` has a batch pipeline (`BATCHED_PRESETS`)."""
    return aug in BATCHED_PRESETS


def build_batch_pipeline(img_size: int, aug: str, seed: int | None, resize_mode: str) -> BatchPipeline:
    """The batch pipeline of preset ``aug`` (one of `BATCHED_PRESETS`).

    Raises:
        ValueError: a preset without a batch pipeline.
    """
    if not batched(aug):
        raise ValueError(f"--batch-aug: preset {aug!r} has no batch pipeline; batched: {', '.join(BATCHED_PRESETS)}")
    affine = None if aug == "none" else BatchAffine(flip=PHOTO_FLIP if aug == "photo" else 0.0, seed=seed)
    return BatchPipeline(img_size, affine, resize_mode)
