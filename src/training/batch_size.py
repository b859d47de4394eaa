"""``--batch-size auto``: the largest batch that fits the GPU; ``--effective-batch-size``: the accumulation to match;
and the one-line answer to a CUDA out-of-memory error.

The search follows PyTorch Lightning's `BatchSizeFinder` (mode ``binsearch``: double until a batch does not fit,
then bisect), which needs Lightning's Trainer, so it is written here for an ignite run: each trial is one forward
and backward pass of a fresh copy of the run's architecture on random images of the run's size, in its AMP mode and
memory format. The model, its weights and the random state of the run are untouched (the copy is built under
`torch.random.fork_rng` and freed after). The optimizer's state, the EMA copy and the data pipeline need memory the
trials do not allocate, hence the safety margin.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from src.config import EVAL_MULTIPLE, Config
from src.model import build_model, reads_sequences
from src.targets import Task
from src.training.engine import autocast_dtype
from src.utils import distributed
from src.utils.errors import is_out_of_memory

logger = logging.getLogger(__name__)

SAFETY = 0.9  # share of the largest batch that fitted which is used
def search(fits: Callable[[int], bool], limit: int, start: int = 2) -> int:
    """The largest batch size in [1, limit] for which ``fits`` is true, assuming larger never fits when smaller does
    not: doubling from ``start`` until a size does not fit (or reaches ``limit``), then bisecting to within 1/16.

    Returns:
        The largest size found to fit; 0 when not even 1 fits.
    """
    good, bad, size = 0, limit + 1, min(start, limit)
    while good < size < bad:
        if fits(size):
            good, size = size, min(2 * size, limit)
        else:
            bad = size
            size = size // 2 if good == 0 else size  # the start did not fit: halve until one does
    while bad - good > max(1, good // 16):
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good


def with_margin(size: int) -> int:
    """``SAFETY`` of ``size``, rounded down to a multiple of 8 from 16 on (tensor cores like multiples of 8)."""
    size = max(1, int(size * SAFETY))
    return size - size % 8 if size >= 16 else size


def trial_fits(
    model: nn.Module, batch: int, shape: tuple[int, ...], config: Config, device: torch.device, train: bool = True
) -> bool:
    """Whether one forward and backward pass (``train``; else one forward pass without gradients, as an evaluation)
    of ``model`` on ``batch`` random inputs of ``shape`` (C, H, W) fits, in the run's AMP mode and memory format;
    the gradients are freed after.

    Raises:
        RuntimeError: a failure that is not out of memory (`is_out_of_memory`).
    """
    dtype = autocast_dtype(config.step.amp, device)
    memory_format = torch.channels_last if config.step.channels_last else torch.contiguous_format
    try:
        x = torch.randn(batch, *shape, device=device).contiguous(memory_format=memory_format)  # (N, C, H, W)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), torch.set_grad_enabled(train):
            loss = model(x).float().logsumexp(dim=1).mean()  # touches every logit, as a cross entropy does
        if train:
            loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # an asynchronous kernel's own allocation failure surfaces here
        fitted = True
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        fitted = False
    model.zero_grad(set_to_none=True)
    x = loss = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return fitted


def largest_batch(
    model: nn.Module,
    shape: tuple[int, ...],
    config: Config,
    device: torch.device,
    limit: int,
    train: bool = True,
    start: int = 2,
) -> tuple[int, list[int]]:
    """The largest batch (up to ``limit``) of inputs of ``shape`` (C, H, W) for which a training pass (``train``) or
    an evaluation pass of ``model`` fits (`search` from ``start``, `trial_fits`), and the sizes tried in order."""
    model.train(train)
    if config.step.channels_last:
        model.to(memory_format=torch.channels_last)
    tried: list[int] = []

    def fits(batch: int) -> bool:
        tried.append(batch)
        return trial_fits(model, batch, shape, config, device, train)

    return search(fits, limit, start), tried


def find_batch_size(
    config: Config, in_chans: int, num_classes: int | Sequence[int], rows: int, device: torch.device
) -> tuple[int, int]:
    """``--batch-size auto``: the batch (over all processes) to train with, found on a copy of the run's model, and
    the evaluation batch: `EVAL_MULTIPLE` times that where an evaluation pass of it fits, else the largest that does.

    Args:
        config: the run's config (``model``, ``step``, ``loader.img_size`` and its schedule's largest size).
        in_chans: channels of the images.
        num_classes: outputs of the model (classes per head for several heads).
        rows: rows of the data (no batch is larger).
        device: a CUDA device.

    Returns:
        ``(batch_size, eval_batch_size)``, each over all processes.

    Raises:
        ValueError: not on CUDA, a model that reads point sequences, or not even one image fits.
    """
    if device.type != "cuda":
        raise ValueError(f"--batch-size auto: finds the largest batch that fits a GPU; on {device.type} pass a number")
    if reads_sequences(config.model.arch):
        raise ValueError(f"--batch-size auto: image models only; pass a number for --arch {config.model.arch}")
    size = max(s for _, s in config.loader.size_schedule)
    processes = distributed.world_size()
    with torch.random.fork_rng(devices=[device]):  # the trial model's init must not move the run's seed
        model_config = dataclasses.replace(config.model, in_chans=in_chans, pretrained=None)
        model = build_model(model_config, num_classes).to(device)
        shape, limit = (in_chans, size, size), max(1, rows // processes)
        largest, tried = largest_batch(model, shape, config, device, limit)
        per_process = with_margin(largest) if largest else 0
        evaluation = EVAL_MULTIPLE * per_process
        if per_process and not trial_fits(model, evaluation, shape, config, device, train=False):
            found, _ = largest_batch(model, shape, config, device, evaluation, train=False, start=per_process)
            evaluation = max(with_margin(found), per_process)
        model = None  # freed before training starts
        gc.collect()
        torch.cuda.empty_cache()
    largest = distributed.min_over_ranks(largest)
    if largest == 0:
        arch = config.model.arch
        raise ValueError(f"--batch-size auto: not even one {size} px image fits on {device} with --arch {arch}")
    batch, eval_batch = with_margin(largest) * processes, distributed.min_over_ranks(evaluation) * processes
    logger.info(
        "--batch-size auto: %d fits per process at %d px (tried %s); training with %d (%d%% margin%s), "
        "evaluating with %d",
        largest, size, ", ".join(map(str, tried)), batch, round(100 * (1 - SAFETY)),
        f", {processes} processes" if processes > 1 else "", eval_batch,
    )
    return batch, eval_batch


def resolve_batch(config: Config, task: Task, in_chans: int, rows: int, device: torch.device) -> Config:
    """The config with ``--batch-size auto`` (and the evaluation batch it finds) and ``--effective-batch-size``
    turned into numbers (what the run saves).

    Args:
        config: the run's config.
        task: the data's `src.targets.Task` (the model's outputs).
        in_chans: channels of the images.
        rows: rows of the data (no batch is larger).
        device: where the run trains.

    Raises:
        ValueError: ``auto`` off CUDA or for a sequence model, or not even one image fits.
    """
    batch, eval_batch, step = config.loader.batch_size, config.loader.eval_batch_size, config.step
    if batch == "auto":
        num_classes = task.sizes if task.kind == "multihead" else (config.model.num_classes or task.num_outputs)
        batch, found = find_batch_size(config, in_chans, num_classes, rows, device)
        eval_batch = eval_batch or found
    accumulation = step.accumulation_steps
    if step.effective_batch_size is not None:
        accumulation = accumulation_for(step.effective_batch_size, batch)
        logger.info(
            "--effective-batch-size %d: --accumulation-steps %d of --batch-size %d (%d images per optimizer step)",
            step.effective_batch_size, accumulation, batch, accumulation * batch,
        )
    return config.replace(batch_size=batch, eval_batch_size=eval_batch, accumulation_steps=accumulation)


def accumulation_for(effective_batch_size: int, batch_size: int) -> int:
    """``--effective-batch-size``: the accumulation steps whose update comes closest to that many images."""
    return max(1, math.floor(effective_batch_size / batch_size + 0.5))


def out_of_memory_message(config: Config) -> str:
    """The one line that answers a CUDA out-of-memory error during training."""
    return (
        f"CUDA out of memory at --batch-size {config.loader.batch_size} and --img-size "
        f"{max(s for _, s in config.loader.size_schedule)}: pass --batch-size auto (the largest batch that fits) or "
        f"a smaller --batch-size with --accumulation-steps to keep the update; the last checkpoint is intact "
        f"(the same command continues from it)"
    )
