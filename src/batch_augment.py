"""The train pipeline of the ``none`` and ``light`` presets on whole batches: per image only the resize (or pad),
then one random affine warp and the normalisation for the batch in torch (``--batch-aug``, the default).

Why: albumentations transforms one image per call, and most of an `A.Affine` call is its per-call Python work
(~118 us of a ~190 us light pipeline per 32 px digit, while OpenCV's warp itself takes 9 us; NOTES 2026-11-30).
On 2 CPU cores the model uses both, so the in-process loader cannot hide behind the step and cost ~10% of an
epoch. Here the warp of a batch is one `torch.nn.functional.affine_grid` + `grid_sample` call. kornia's
`RandomAffine` does the same on batches but draws its parameters from torch's global generator per batch; the
draws here come from each sample's key ``(row, seed, epoch)`` (`src.sampling.EpochSampler`), as the per-image
pipeline's do (`src.augmentations.reseed`), so a sample's augmentation does not depend on the batch it is in, on
worker processes, on the number of processes, or on where a run resumed.

The affine has the semantics of the ``light`` preset's `A.Affine` (scale, translation as a share of the side,
rotation in degrees about the centre, zeros outside, bilinear); the test compares the two on fixed parameters.
Like albumentations, the shift is truncated to whole pixels and the warped image rounded to whole grey levels.
The other presets (local warps, dropout, photometric changes) and pipeline files stay per image in albumentations.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from src.augmentations import LIGHT

BATCHED_PRESETS = ("none", "light")


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
    """Random scale, translation and rotation per image of a batch, drawn from each image's key.

    Args:
        scale: range of the zoom factor.
        translate: range of the shift along each axis, as a share of that side.
        rotate: range of the rotation, degrees.
        p: probability that an image is warped.
        seed: seed of the draws for integer keys (a loader without `src.sampling.EpochSampler`).
    """

    def __init__(
        self,
        scale: tuple[float, float] = LIGHT["scale"],
        translate: tuple[float, float] = LIGHT["translate"],
        rotate: tuple[float, float] = LIGHT["rotate"],
        p: float = LIGHT["p"],
        seed: int | None = None,
    ):
        self.scale, self.translate, self.rotate, self.p = scale, translate, rotate, p
        self._rng = np.random.default_rng(seed)

    def draw(self, keys: Sequence) -> np.ndarray:
        """Per key, ``(warped, scale, shift x, shift y, degrees)``: float64 (N, 5); tuple keys ``(row, seed, epoch)``
        decide their own draws (`key_uniforms`), integer keys draw from the transform's generator."""
        if keys and isinstance(keys[0], tuple):
            uniform = key_uniforms(np.array(keys, dtype=np.int64), 5)
        else:
            uniform = self._rng.random((len(keys), 5))
        low = np.array([0.0, self.scale[0], self.translate[0], self.translate[0], self.rotate[0]])
        high = np.array([1.0, self.scale[1], self.translate[1], self.translate[1], self.rotate[1]])
        params = low + (high - low) * uniform
        params[:, 0] = uniform[:, 0] < self.p
        return params

    @staticmethod
    def theta(params: np.ndarray, height: int, width: int) -> torch.Tensor:
        """The (N, 2, 3) float32 matrices of `torch.nn.functional.affine_grid` (output -> input, normalised
        coordinates, ``align_corners=False``) of ``params`` rows ``(_, scale, shift x, shift y, degrees)``.

        In pixels about the centre, an image is mapped by ``p_out = s R(a) p_in + t``, with ``t = (tx W, ty H)``
        truncated to whole pixels; the grid needs the inverse, and normalised coordinates are pixels divided by
        (W/2, H/2).
        """
        scale, shift_x, shift_y, degrees = (torch.as_tensor(params[:, k], dtype=torch.float64) for k in range(1, 5))
        angle = -torch.deg2rad(degrees)  # positive degrees turn the image counter-clockwise on screen (y points down)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # (s R(a))^-1 = R(-a) / s
        half_w, half_h = width / 2, height / 2
        inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (N, 2, 2)
        to_pixels = torch.tensor([half_w, half_h], dtype=torch.float64)
        linear = inverse * to_pixels[None, None, :] / to_pixels[None, :, None]  # D^-1 M D
        shift = torch.stack([shift_x * width, shift_y * height], -1).trunc()  # whole pixels, as albumentations
        offset = -(inverse @ shift[..., None])[..., 0] / to_pixels  # -D^-1 M t
        return torch.cat([linear, offset[..., None]], -1).float()

    def __call__(self, images: torch.Tensor, keys: Sequence) -> torch.Tensor:
        """Warps float ``images`` (N, C, H, W) of grey levels 0..255 in place where drawn; returns them."""
        params = self.draw(keys)
        warped = np.flatnonzero(params[:, 0])
        if len(warped):
            height, width = images.shape[-2:]
            theta = self.theta(params[warped], height, width).to(images.device)
            grid = F.affine_grid(theta, [len(warped), *images.shape[1:]], align_corners=False)
            index = torch.as_tensor(warped, device=images.device)
            warp = F.grid_sample(images[index], grid, "bilinear", "zeros", align_corners=False)
            images[index] = warp.round_()  # grey levels, as albumentations' uint8 warp
        return images


class BatchPipeline:
    """uint8 images (H, W, C) and their keys -> float32 (N, C, img_size, img_size): per image the pad / resize of
    `src.augmentations.build_transforms` (OpenCV, as `A.PadIfNeeded` and `A.Resize` call it), then `BatchAffine`
    on the batch (None: no augmentation), then ``(x / 255 - mean) / std`` per channel.

    Args:
        img_size: side of the square output, pixels.
        mean, std: per-channel statistics of pixel / 255, length C.
        affine: the random warp, or None.
        resize_mode: ``"resize"`` or ``"pad"`` (see `build_transforms`).
    """

    batched = True  # `src.loaddata.ImageDataset` hands whole batches of keys to it

    def __init__(
        self,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        affine: BatchAffine | None = None,
        resize_mode: str = "resize",
    ):
        self.img_size, self.affine, self.resize_mode = img_size, affine, resize_mode
        self.mean = torch.tensor(mean, dtype=torch.float32).mul(255)[:, None, None]
        self.scale = 1 / torch.tensor(std, dtype=torch.float32).mul(255)[:, None, None]

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

    def __call__(self, images: Sequence[np.ndarray], keys: Sequence) -> torch.Tensor:
        batch = torch.from_numpy(np.stack([self._resize(image) for image in images]))  # (N, H, W, C) uint8
        batch = batch.permute(0, 3, 1, 2).float()  # (N, C, H, W), 0..255
        if self.affine is not None:
            batch = self.affine(batch, keys)
        return batch.sub_(self.mean).mul_(self.scale).contiguous()


def batched(aug: str) -> bool:
    """Whether the train augmentation ``aug`` has a batch pipeline (`BATCHED_PRESETS`)."""
    return aug in BATCHED_PRESETS


def build_batch_pipeline(
    img_size: int, mean: Sequence[float], std: Sequence[float], aug: str, seed: int | None, resize_mode: str
) -> BatchPipeline:
    """The batch pipeline of preset ``aug`` (one of `BATCHED_PRESETS`).

    Raises:
        ValueError: a preset without a batch pipeline.
    """
    if not batched(aug):
        raise ValueError(f"--batch-aug: preset {aug!r} has no batch pipeline; batched: {', '.join(BATCHED_PRESETS)}")
    affine = BatchAffine(seed=seed) if aug == "light" else None
    return BatchPipeline(img_size, mean, std, affine, resize_mode)
