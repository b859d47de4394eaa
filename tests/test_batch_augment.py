"""The batch pipeline of the light preset (`src.data.batch_augment`): albumentations' warp, per-key draws, the
loader."""

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from src.augmentations import build_transforms
from src.config import LoaderConfig
from src.data.batch_augment import (
    LIGHT,
    BatchAffine,
    BatchPipeline,
    DeviceStage,
    Pixels,
    WarpedPixels,
    build_batch_pipeline,
    key_uniforms,
    warp,
)
from src.loaddata import build_loaders
from tests.helpers import CPU, fake_data, split


def _finished(pixels: list, mean=(0.1,), std=(0.3,)) -> torch.Tensor:
    """What the model sees of a list of `Pixels`: collated as the loader does, then the device stage on the CPU."""
    return DeviceStage(mean, std)(default_collate(pixels), CPU)


def _shape(size: int = 32) -> np.ndarray:
    """A smooth, asymmetric uint8 (H, W, 1) image: a blob off the centre and a bar, so that a wrong sign of a
    rotation or a shift shows."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    blob = 255 * np.exp(-(((x - 0.65 * size) ** 2) + (y - 0.35 * size) ** 2) / (2 * (0.12 * size) ** 2))
    bar = 180 * np.exp(-((y - 0.7 * size) ** 2) / (2 * (0.05 * size) ** 2)) * (x > 0.2 * size) * (x < 0.6 * size)
    return np.clip(blob + bar, 0, 255).astype(np.uint8)[..., None]


def _ours(image: np.ndarray, scale: float, tx: float, ty: float, degrees: float, flip: bool = False) -> np.ndarray:
    affine = BatchAffine(p=1.0, flip=float(flip))
    affine.draw = lambda keys: np.array([[1.0, scale, tx, ty, degrees, float(flip)]] * len(keys))
    theta, warped = affine.matrices([0], *image.shape[:2])
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    return warp(batch, theta, warped)[0, 0].numpy()


def _albumentations(image: np.ndarray, scale: float, tx: float, ty: float, degrees: float) -> np.ndarray:
    warp = A.Affine(
        scale=scale,
        translate_percent={"x": (tx, tx), "y": (ty, ty)},
        rotate=(degrees, degrees),
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        p=1.0,
    )
    return A.Compose([warp], seed=0)(image=image)["image"][..., 0].astype(np.float64)


@pytest.mark.parametrize(  # 32 px: shifts of 2.56 and -1.6 px, truncated to 2 and -1 (as albumentations does)
    "scale, tx, ty, degrees", [(1.0, 0.0, 0.0, 10.0), (1.1, 0.08, -0.05, 0.0), (0.9, -0.05, 0.08, -10.0)]
)
def test_the_warp_is_albumentations_affine_with_the_same_parameters(scale, tx, ty, degrees):
    image = _shape(32)
    expected = _albumentations(image, scale, tx, ty, degrees)
    close = np.abs(_ours(image, scale, tx, ty, degrees) - expected).mean()
    mirrored = np.abs(_ours(image, scale, -tx, -ty, -degrees) - expected).mean()
    moved = np.abs(image[..., 0] - expected).mean()
    assert close < 0.5 and close < 0.05 * min(mirrored, moved), (close, mirrored, moved)


def test_a_samples_warp_depends_on_its_key_only():
    images = [_shape() for _ in range(3)]
    pipeline = build_batch_pipeline(32, "light", seed=0, resize_mode="resize")
    keys = [(0, 7, 1), (1, 7, 1), (2, 7, 1)]
    batch = _finished(pipeline(images, keys))
    alone = _finished(pipeline(images[2:], keys[2:]))
    reordered = _finished(pipeline([images[1], images[0]], [keys[1], keys[0]]))
    assert torch.equal(batch[2], alone[0]) and torch.equal(batch[0], reordered[1])
    assert not torch.equal(batch[0], batch[1]) or not torch.equal(batch[1], batch[2])  # other keys, other draws
    again = _finished(build_batch_pipeline(32, "light", seed=3, resize_mode="resize")(images, keys))
    assert torch.equal(batch, again)  # the key decides, not the pipeline's seed
    next_epoch = _finished(pipeline(images, [(k, 7, 2) for k, _, _ in keys]))
    assert not torch.equal(batch, next_epoch)


def test_the_workers_hand_over_uint8_pixels_and_the_warp_drawn_for_them():
    pixels = build_batch_pipeline(32, "light", seed=0, resize_mode="resize")([_shape(28)] * 2, [(0, 0, 0), (1, 0, 0)])
    assert all(isinstance(p, WarpedPixels) for p in pixels)
    assert pixels[0].image.dtype == torch.uint8 and pixels[0].image.shape == (32, 32, 1)
    assert pixels[0].theta.shape == (2, 3) and pixels[0].theta.dtype == torch.float32
    plain = BatchPipeline(32, None)([_shape(28)], [0])
    assert isinstance(plain[0], Pixels) and plain[0].image.dtype == torch.uint8


def test_the_gpus_warp_of_every_row_equals_the_cpus_of_the_warped_rows():
    pipeline = build_batch_pipeline(40, "light", seed=0, resize_mode="resize")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (37, 45, 3), dtype=np.uint8) for _ in range(24)]
    batch = default_collate(pipeline(images, [(row, 1, 2) for row in range(24)]))
    assert 0 < batch.warped.sum() < 24  # some rows warped, some not
    x = batch.image.permute(0, 3, 1, 2).float()
    rows = warp(x.clone(), batch.theta, batch.warped, select_rows=True)
    every = warp(x.clone(), batch.theta, batch.warped, select_rows=False)
    assert torch.equal(rows, every)
    assert torch.equal(rows[~batch.warped], x[~batch.warped]) and not torch.equal(rows[batch.warped], x[batch.warped])


def test_the_draws_cover_the_light_presets_ranges_with_its_probability():
    params = BatchAffine().draw([(row, 0, 0) for row in range(4000)])
    assert abs(params[:, 0].mean() - LIGHT["p"]) < 0.03
    for column, name in ((1, "scale"), (2, "translate"), (3, "translate"), (4, "rotate")):
        low, high = LIGHT[name]
        assert low <= params[:, column].min() < low + 0.05 * (high - low)
        assert high - 0.05 * (high - low) < params[:, column].max() <= high


@pytest.mark.parametrize(
    "resize_mode, side, channels", [("resize", 28, 3), ("resize", 40, 1), ("pad", 28, 6), ("pad", 40, 3)]
)
def test_without_a_warp_the_device_stage_equals_albumentations_valid_pipeline_exactly(resize_mode, side, channels):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (side, side + 5, channels), dtype=np.uint8) for _ in range(4)]
    mean, std = list(rng.uniform(0.1, 0.6, channels)), list(rng.uniform(0.1, 0.4, channels))
    batch = _finished(BatchPipeline(32, None, resize_mode)(images, [0, 1, 2, 3]), mean, std)
    per_image = build_transforms(32, mean, std, "none", resize_mode=resize_mode)
    expected = torch.stack([per_image(image=image)["image"] for image in images])
    assert batch.shape == (4, channels, 32, 32) and batch.dtype == torch.float32
    assert torch.equal(batch, expected)  # the same arithmetic as albumentations' Normalize on uint8


@pytest.mark.parametrize("batch_aug", [True, False])
def test_the_train_loader_batches_are_each_samples_own_augmentation(batch_aug):
    data = fake_data(n=48, shape=(28, 28))
    train_idx, valid_idx = split(data, 4, 0)
    config = LoaderConfig(img_size=32, batch_size=8, aug="light", batch_aug=batch_aug, num_workers=0)
    loaders = build_loaders(data, (train_idx, valid_idx), config, seed=5)
    assert isinstance(loaders.train.dataset.transform, BatchPipeline) == batch_aug
    x, _ = next(iter(loaders.train))
    keys = list(loaders.train.sampler)[:8]
    assert torch.equal(x, loaders.view(loaders.train.dataset, keys))
    assert x.shape == (8, 1, 32, 32) and x.dtype == torch.float32


def test_key_uniforms_are_uniform_and_differ_with_every_field_of_the_key():
    keys = np.array([(row, seed, epoch) for row in range(500) for seed in (0, 1) for epoch in (0, 1)])
    uniform = key_uniforms(keys, 5)
    assert uniform.shape == (2000, 5) and 0 <= uniform.min() and uniform.max() < 1
    assert abs(uniform.mean() - 0.5) < 0.01 and abs(uniform.std() - (1 / 12) ** 0.5) < 0.01
    assert len(np.unique(uniform[:, 0])) == len(keys)  # no two keys (row, seed or epoch apart) draw alike
    assert np.abs(np.corrcoef(uniform.T) - np.eye(5)).max() < 0.06  # the draws of one key are independent
    assert np.array_equal(key_uniforms(keys[::-1], 5), uniform[::-1])  # a key's draws are its own


def test_the_photo_preset_mirrors_as_albumentations_horizontal_flip_does():
    image = _shape(32)
    affine = BatchAffine(p=0.0, flip=1.0)  # flipped, not warped: a mirror, exactly
    theta, moved = affine.matrices([(0, 0, 0)], 32, 32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    assert moved.all() and torch.equal(warp(x.clone(), theta, moved)[0, 0], x[0, 0].flip(-1))
    for scale, tx, ty, degrees in [(1.1, 0.08, -0.05, 0.0), (0.9, -0.05, 0.08, -10.0)]:  # warped, then mirrored
        expected = np.fliplr(_albumentations(image, scale, tx, ty, degrees))
        close = np.abs(_ours(image, scale, tx, ty, degrees, flip=True) - expected).mean()
        unmirrored = np.abs(_ours(image, scale, tx, ty, degrees) - expected).mean()
        assert close < 0.5 and close < 0.05 * unmirrored, (close, unmirrored)


def test_the_photo_preset_keeps_the_light_presets_warps_and_flips_half_the_images():
    keys = [(row, 3, 1) for row in range(2000)]
    light, photo = BatchAffine().draw(keys), BatchAffine(flip=0.5).draw(keys)
    assert np.array_equal(light[:, :5], photo[:, :5]) and not light[:, 5].any()
    assert abs(photo[:, 5].mean() - 0.5) < 0.04
    pipeline = build_batch_pipeline(16, "photo", seed=0, resize_mode="resize")
    pixels = pipeline([_shape(16)] * 8, keys[:8])
    assert all(isinstance(p, WarpedPixels) for p in pixels)
