"""What a run builds from its config before training: the device, the data and its folds, the loaders, the
resolved config and the model. Each function documents the config fields it reads."""

from __future__ import annotations

import dataclasses
import logging

import ignite.distributed as idist
import numpy as np
import torch

from src.config import LOG_EVERY, Config
from src.data.distill import hard_targets
from src.data.distill import test_set as teacher_test_set
from src.data.distill import train_targets as distilled_targets
from src.data.folds import assign_folds, folds_from_run, split_indices
from src.data.images import PointSequences, Reading
from src.data.metadata import MetaEncoder, meta_columns
from src.data.pseudo import pseudo_labelled
from src.layers import manifold
from src.loaddata import Data, Loaders, TrainSet, build_loaders, default_num_workers, load_data
from src.metrics import get_metric
from src.model import build_model, check_arch, reads_sequences
from src.targets import Task
from src.training.batch_size import resolve_batch
from src.utils import distributed

logger = logging.getLogger(__name__)
DRY_RUN_FRACTION = 0.01


def prepare(config: Config) -> Config:
    """Checks ``arch`` and what ``--mixup-at features`` needs of the rest of the config before anything is read or
    written; a dry run trains one epoch.

    Raises:
        ValueError: an unknown arch (the message lists the known ones); manifold mixup with ``--compile`` (its hooks
            change per iteration) or with an arch that reads point sequences (no stages to mix).
    """
    check_arch(config.model.arch)
    if config.regularisation.mixup_at == "features" and config.step.compile:
        raise ValueError(manifold.COMPILED)
    if config.regularisation.mixup_at == "features" and reads_sequences(config.model.arch):
        raise ValueError(manifold.NO_STAGES)
    return config.replace(epochs=1) if config.run.dry_run else config


def resolve_device(name: str) -> torch.device:
    """``--device``: 'auto' is CUDA when available, else the CPU. With several processes, each process's own
    device (`idist.device()`: the GPU of its local rank under nccl, the CPU under gloo). On CUDA, cuDNN picks
    the fastest convolution algorithms for the shapes it sees (``cudnn.benchmark``), and float32 matrix products
    and convolutions use TensorFloat-32 (Ampere and later: 10 bits of mantissa, the default of JAX and of most
    trainers; bf16 autocast covers most of the step anyway).

    Raises:
        ValueError: CUDA asked for on a machine without it.
    """
    if distributed.world_size() > 1:
        device = idist.device()
    elif name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
    return device


def reading(config: Config) -> Reading:
    """What the layout readers are told (`src.data.images.Reading`): ``in_chans`` values per pixel, strokes rasterized
    at ``img_size``, point sequences for an arch that reads them, and image files decoded no smaller than needed for
    the largest size of the ``--img-size-schedule``."""
    largest = max(size for _, size in config.loader.size_schedule)
    return Reading(config.model.in_chans, config.loader.img_size, reads_sequences(config.model.arch), largest)


def setup_data(config: Config) -> tuple[Data, np.ndarray]:
    """Reads and checks the data (``data`` group) and assigns the folds (``split`` group, ``group_col``,
    ``fold_col``).

    Returns:
        The data, and the fold of every row (int64 (N,)).

    Raises:
        ValueError: bad input, a metric the task cannot use, or an arch that does not read this data.
    """
    progress = config.run.progress and distributed.is_main()
    data = load_data(config.data, reading(config), dry_run=config.run.dry_run, progress=progress)
    get_metric(config.eval.metric, data.task)  # a metric the task kind cannot use stops here
    arch = config.model.arch
    if reads_sequences(arch) != isinstance(data.source.images, PointSequences):
        raise ValueError(
            f"--arch {arch} reads QuickDraw strokes as point sequences (--layout strokes)"
            if reads_sequences(arch)
            else f"--arch {arch} takes images, not point sequences"
        )
    if config.data.meta_cols:
        check_meta(config, data)
    split = config.split
    if split.folds_from:
        return data, folds_from_run(data, split.folds_from, split.folds, config.track.mlflow)
    fold_of = assign_folds(data, split.folds, config.split_seed, config.data.group_col, config.data.fold_col)
    return data, fold_of


def check_meta(config: Config, data: Data) -> None:
    """``--meta-cols``: the train table has the columns, and nothing else the run reads lacks them.

    Raises:
        ValueError: a missing column (named with the table), point sequences, or test images added to training
            (pseudo-labels, --teacher-test), whose metadata is not read.
    """
    if reads_sequences(config.model.arch):
        raise ValueError(f"--meta-cols: image models only, not --arch {config.model.arch}")
    if config.pseudo.pseudo_labels or config.distill.teacher_test:
        raise ValueError("--meta-cols with --pseudo-labels or --teacher-test: test images join training without their "
                         "metadata; not supported")
    meta_columns(data.source.table, config.data.meta_cols, str(data.source.where))


def setup_loaders(config: Config, data: Data, fold_of: np.ndarray, device: torch.device) -> Loaders:
    """The train, train-eval and valid loaders of fold ``split.fold`` (``loader`` group; a dry run uses 1% of
    the rows, ``data_fraction`` otherwise); pseudo-labelled test images join the train fold (``pseudo`` group);
    with ``--meta-cols`` the metadata is encoded with the train fold's statistics (`src.data.metadata`).

    Raises:
        ValueError: an empty validation fold, or bad pseudo-labels.
    """
    fraction = DRY_RUN_FRACTION if config.run.dry_run else config.split.data_fraction
    train_idx, valid_idx = split_indices(
        fold_of, config.split.fold, config.split_seed, fraction=fraction, min_train=config.loader.batch_size
    )
    if len(valid_idx) == 0:
        raise ValueError(f"--fold {config.split.fold}: no rows in this fold of {config.split.folds}")
    workers = config.loader.num_workers
    loader = dataclasses.replace(config.loader, num_workers=default_num_workers(device) if workers is None else workers)
    train_set = training_set(config, data, fold_of, train_idx)
    encoder = None
    if config.data.meta_cols:
        encoder = MetaEncoder.fit(data.source.table, config.data.meta_cols, train_idx)
        data = dataclasses.replace(data, meta=encoder.transform(data.source.table, str(data.source.where)))
    rows, seed, channels_last = (train_idx, valid_idx), config.run.seed, config.step.channels_last
    loaders = build_loaders(data, rows, loader, seed, device, train_set, channels_last)
    loaders.train.sampler.limit(config.run.max_iters_per_epoch)  # each capped epoch is a fresh pass
    return dataclasses.replace(loaders, meta_encoder=encoder)


def training_set(config: Config, data: Data, fold_of: np.ndarray, train_idx: np.ndarray) -> TrainSet | None:
    """What the train fold learns besides its labels: pseudo-labelled test images (``pseudo`` group), or a
    teacher's soft targets and teacher-labelled test images (``distill`` group, `src.data.distill`).

    Raises:
        ValueError: --pseudo-labels with --teacher, --teacher-test without --teacher, or a bad teacher (one on
            other folds than ``fold_of``, the folds of every row, unless --allow-different-folds).
        FileNotFoundError: a missing teacher or prediction file.
    """
    distill = config.distill
    if distill.teacher_test and not distill.teacher:
        raise ValueError("--teacher-test needs --teacher (the folder whose test_predictions.csv it learns)")
    if config.pseudo.pseudo_labels and distill.teacher:
        raise ValueError("--pseudo-labels with --teacher: use --teacher-test to learn the teacher's test predictions")
    if config.pseudo.pseudo_labels:
        extra = pseudo_labelled(config.pseudo, config.data, reading(config), data.task, config.track.mlflow)
        return TrainSet(extra=extra)
    if not distill.teacher:
        return None
    targets = distilled_targets(config, data.source.ids(), data.targets, (fold_of, train_idx), data.task)
    if not distill.teacher_test:
        return TrainSet(targets=targets)
    if targets is None:  # the labels alone, as soft vectors beside the test images' soft targets
        targets = hard_targets(data.targets[train_idx], data.task)
    return TrainSet(targets=targets, extra=teacher_test_set(config, reading(config), data.task))


def resolve(config: Config, data: Data, loaders: Loaders, device: torch.device) -> Config:
    """The config with its inferred fields resolved: ``num_classes`` and ``in_chans`` from the data, the L-softmax
    head for ``--loss lsoftmax``, ``meta_features`` (the width of the metadata encoding, with ``--meta-cols``),
    ``num_workers`` as the loaders use them, ``--log-every auto`` for ``device``, and the train fold's normalisation
    (floats), saved with the run so that prediction normalises the same way. (The batch size and accumulation, which
    the loaders need, are resolved before them: `src.training.batch_size.resolve_batch`.)

    Raises:
        ValueError: ``--num-classes`` below the data's classes, or ``--in-chans`` other than the images'.
    """
    task, model = data.task, config.model
    if task.kind != "multihead" and model.num_classes is not None and model.num_classes < task.num_outputs:
        raise ValueError(f"--num-classes {model.num_classes}: the data has {task.num_outputs} classes")
    if model.in_chans is not None and model.in_chans != data.in_chans:
        raise ValueError(f"--in-chans {model.in_chans}: the images have {data.in_chans} channels")
    head = "lsoftmax" if config.loss.loss == "lsoftmax" and model.head == "linear" else model.head
    return config.replace(
        head=head,
        meta_features=loaders.meta_encoder.width if loaders.meta_encoder is not None else None,
        num_classes=task.num_outputs if task.kind == "multihead" else (model.num_classes or task.num_outputs),
        in_chans=data.in_chans,
        num_workers=loaders.train.num_workers,
        log_every=LOG_EVERY.get(device.type, 1) if config.run.log_every == "auto" else config.run.log_every,
        mean=tuple(loaders.mean) if loaders.mean else config.loader.mean,
        std=tuple(loaders.std) if loaders.std else config.loader.std,
    )


def setup_model(
    config: Config, task: Task, device: torch.device, meta_encoder: MetaEncoder | None = None
) -> torch.nn.Module:
    """The ``model`` group's model with one output per class (one head per label column for several heads), on
    ``device`` in the ``channels_last`` memory format when set; with metadata, its MLP keeps ``meta_encoder`` (saved
    with every checkpoint)."""
    num_classes = task.sizes if task.kind == "multihead" else config.model.num_classes
    model = build_model(config.model, num_classes, meta_encoder)
    return model.to(device, memory_format=torch.channels_last if config.step.channels_last else torch.preserve_format)


@dataclasses.dataclass(frozen=True)
class Steps:
    """A run's step counts, computed once (`Steps.of`). One meaning each: an *iteration* is one micro-batch (what
    ignite's ``trainer.state.iteration`` counts), an *optimizer step* one update of the weights
    (``accumulation_steps`` iterations).

    Attributes:
        epoch_length: iterations (micro-batches) per epoch.
        per_epoch: optimizer steps per epoch (``epoch_length / accumulation_steps``).
        total: optimizer steps of the whole run (what the lr schedule spans).
        warmup: optimizer steps of the lr warmup (and of the EMA decay warmup).
    """

    epoch_length: int
    per_epoch: float
    total: int
    warmup: int

    @classmethod
    def of(cls, config: Config, train_batches: int) -> Steps:
        """From the train loader's batches, ``max_iters_per_epoch``, ``accumulation_steps``, ``epochs`` and
        ``warmup_epochs``."""
        cap = config.run.max_iters_per_epoch
        epoch_length = min(train_batches, cap) if cap else train_batches
        per_epoch = epoch_length / config.step.accumulation_steps
        total, warmup = int(config.optim.epochs * per_epoch), int(config.optim.warmup_epochs * per_epoch)
        return cls(epoch_length, per_epoch, total, warmup)


@dataclasses.dataclass(frozen=True)
class Parts:
    """A run's parts, complete when built (`assemble`); what training changes later lives in the objects (the
    model's weights, the loaders' image size), never in new fields.

    Attributes:
        config: the resolved config: batch size, classes, channels, workers and normalisation filled in
            (`resolve`); what the run saves as its ``config.yaml``.
        device: where the model runs.
        data: the rows, images and targets.
        fold_of: the fold of every row, int64 (N,).
        loaders: the train, train-eval and valid loaders of ``config``'s fold.
        model: the model on ``device``, its metadata MLP (if any) holding the train fold's encoding.
        steps: the run's iteration and optimizer-step counts.
    """

    config: Config
    device: torch.device
    data: Data
    fold_of: np.ndarray
    loaders: Loaders
    model: torch.nn.Module
    steps: Steps


def assemble(config: Config, device: torch.device) -> Parts:
    """Builds a run's parts from its config, in the one order their facts allow: the arch checked (`prepare`); the
    data and folds (`setup_data`); the batch size (``--batch-size auto`` tries the model on ``device``:
    `src.training.batch_size.resolve_batch`); the loaders of the fold (`setup_loaders`); the config resolved from the
    data and loaders (`resolve`); the model (`setup_model`); the iteration and optimizer-step counts (`Steps`). The
    train, lr-finder and soup commands all build their runs here.

    Raises:
        ValueError: bad input (the data, the folds, a metric or arch the data cannot use, a batch that never fits).
        FileNotFoundError: a missing table, image folder, teacher or pseudo-label file.
    """
    planned = prepare(config)
    data, fold_of = setup_data(planned)
    sized = resolve_batch(planned, data.task, data.in_chans, len(fold_of), device)
    loaders = setup_loaders(sized, data, fold_of, device)
    resolved = resolve(sized, data, loaders, device)
    model = setup_model(resolved, data.task, device, loaders.meta_encoder)
    return Parts(resolved, device, data, fold_of, loaders, model, Steps.of(resolved, len(loaders.train)))
