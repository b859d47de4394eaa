import time

import numpy as np
import pandas as pd
import pytest
import torch

from src.loaddata import (
    Data,
    assign_folds,
    build_loaders,
    channel_stats,
    load_digits,
    make_folds,
    split_indices,
)
from src.sources import ArrayImages, Source
from src.targets import Head, Task


def _fake_data(n=120, num_classes=4, shape=(20, 20), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = np.arange(n) % num_classes
    task = Task("single", (Head("label", tuple(f"c{i}" for i in range(num_classes))),))
    table = pd.DataFrame({"id": [str(i) for i in range(n)], "label": [f"c{i}" for i in labels]})
    return Data(Source(table, ArrayImages(images), "fake.csv", "id"), task, labels.astype(np.int64))


def _split(data, folds, fold, **kwargs):
    return split_indices(assign_folds(data, folds, seed=0), fold, seed=0, **kwargs)


def test_bundled_digits_are_real_mnist():
    data = load_digits()
    images = data.source.images.images
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(data.targets).tolist() == [500] * 10
    assert data.in_chans == 1 and data.classes == [str(i) for i in range(10)]


def test_folds_are_stratified_deterministic_and_cover_every_row():
    labels = np.repeat(np.arange(5), [40, 23, 17, 60, 11])
    folds = make_folds(None, labels, 5, seed=3)
    assert np.array_equal(folds, make_folds(None, labels, 5, seed=3))
    assert not np.array_equal(folds, make_folds(None, labels, 5, seed=4))
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    for c in range(5):
        counts = np.bincount(folds[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_too_small_class_is_named():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        make_folds(None, np.array([0] * 10 + [1] * 10 + [2] * 3), 5, seed=0)


def test_fraction_keeps_fold_assignment():
    data = _fake_data(200)
    full_train, full_valid = _split(data, 5, 1)
    train, valid = _split(data, 5, 1, fraction=0.1, min_train=32)
    assert len(train) == 32 and set(train) <= set(full_train) and set(valid) <= set(full_valid)
    assert not set(full_train) & set(full_valid)


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
    data = _fake_data(120, shape=shape)
    train_idx, valid_idx = _split(data, 4, 0)
    loaders = build_loaders(data, train_idx, valid_idx, img_size=32, batch_size=16, aug="light", train_eval_size=40)
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
    data = _fake_data(80)
    train_idx, valid_idx = _split(data, 4, 0)
    loaders = build_loaders(data, train_idx, valid_idx, img_size=20, batch_size=8, aug="light")  # no resize
    a = torch.cat([x for x, _ in loaders.valid])
    b = torch.cat([x for x, _ in loaders.valid])
    assert torch.equal(a, b)
    train_eval = torch.cat([x for x, _ in loaders.train_eval])
    assert abs(train_eval.mean().item()) < 0.1 and abs(train_eval.std().item() - 1) < 0.1


def test_file_images_load_in_worker_processes(tmp_path):
    from src.config import Config
    from src.loaddata import load_data
    from tests import layouts

    csv, folder = layouts.image_folder(tmp_path, n=16, num_classes=2)
    data = load_data(Config(train_csv=str(csv), image_dir=str(folder)))
    train_idx, valid_idx = _split(data, 2, 0)
    loaders = build_loaders(data, train_idx, valid_idx, img_size=16, batch_size=4, num_workers=2)
    in_workers = torch.cat([x for x, _ in loaders.valid])
    loaders = build_loaders(data, train_idx, valid_idx, img_size=16, batch_size=4, num_workers=0)
    assert torch.equal(in_workers, torch.cat([x for x, _ in loaders.valid]))
