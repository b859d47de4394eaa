"""Handlers attached to the engines by event: evaluation, schedules, early stopping, freezing, resizing, logging.

Checkpoints: `src.training.checkpoints`; weight averages: `src.training.averaging`; the history: `src.tracking.history`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import (
    EarlyStopping,
    ParamScheduler,
    ProgressBar,
    ReduceLROnPlateauScheduler,
    TensorboardLogger,
    TerminateOnNan,
    global_step_from_engine,
)
from ignite.metrics import Average
from torch.utils.data import DataLoader

from src.config import format_duration
from src.data.prefetch import DeviceLoader
from src.loaddata import Loaders
from src.training.engine import window_start_filter
from src.training.optim import set_backbone_trainable
from src.utils import distributed

logger = logging.getLogger(__name__)

LOG_LINE_SECONDS = 30.0  # output that is not a terminal: one progress line at most this often (and per epoch)


def attach_training_metrics(trainer: Engine, device: torch.device | str = "cpu") -> Average:
    """The epoch's mean loss (for the history; over all processes), summed on ``device`` without waiting for it.
    Returns the metric (its state is saved with the training state)."""
    metric = Average(output_transform=lambda out: out["loss"], device=device)
    metric.attach(trainer, "loss")
    return metric


def attach_lr_scheduler(
    trainer: Engine, selector: Engine, lr_scheduler: ParamScheduler | None, accumulation_steps: int
) -> None:
    """Step-wise schedules run before each optimizer step; the plateau schedule after each run of ``selector``, the
    selecting evaluator (the one whose metric selects checkpoints and stops early, `src.training.evaluation.Selection`:
    ``valid``, or ``valid_ema`` with ``--ema``), whose metric it watches."""
    if lr_scheduler is None:
        return
    if isinstance(lr_scheduler, ReduceLROnPlateauScheduler):
        selector.add_event_handler(Events.COMPLETED, lr_scheduler)
    else:
        trainer.add_event_handler(
            Events.ITERATION_STARTED(event_filter=window_start_filter(accumulation_steps)), lr_scheduler
        )


def attach_set_epoch(trainer: Engine, loader: DeviceLoader | DataLoader) -> None:
    """Tells the loader's sampler (`src.data.sampling.EpochSampler`, or any sampler with ``set_epoch`` such as torch's
    `DistributedSampler`) the 0-based epoch at each epoch start, so every epoch has its own shuffle and augmentation
    draws."""
    if hasattr(loader.sampler, "set_epoch"):
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: loader.sampler.set_epoch(engine.state.epoch - 1))


def attach_evaluation(trainer: Engine, evaluators: dict[str, tuple[Engine, Iterable[Any]]], every: Events) -> None:
    """Runs each ``name -> (evaluator, loader)`` on ``every`` trainer event, in the given order."""

    def evaluate(engine: Engine) -> None:
        for evaluator, loader in evaluators.values():
            evaluator.run(loader)

    trainer.add_event_handler(every, evaluate)


def attach_progressive_resizing(trainer: Engine, loaders: Loaders, size_at: Callable[[int], int], seed: int) -> None:
    """Progressive resizing (fast.ai's DAWNBench recipe, Howard 2018; Touvron et al. 2019 on train/test size):
    at the start of each epoch, switches the train and evaluation pipelines to ``size_at(epoch - 1)`` pixels
    when that differs from the current size, and restarts the train iterator so the new size applies to the
    whole epoch (also on the first epoch of a resumed run, and with worker processes).

    Args:
        trainer: the training engine.
        loaders: the run's `src.loaddata.Loaders` (built with an image-size schedule when workers are used).
        size_at: 0-based epoch -> image side in pixels.
        seed: the train augmentation is re-seeded with ``seed + epoch`` at each change.
    """

    def resize(engine: Engine) -> None:
        size = size_at(engine.state.epoch - 1)
        if size != loaders.img_size:
            loaders.set_img_size(size, seed + engine.state.epoch)
            engine.set_data(loaders.train)
            logger.info("epoch %d: image size %d px", engine.state.epoch, size)

    trainer.add_event_handler(Events.EPOCH_STARTED, resize)


def attach_freezing(trainer: Engine, model: torch.nn.Module, freeze_epochs: int) -> None:
    """Trains only the head for the first ``freeze_epochs`` epochs (backbone ``requires_grad=False``), then
    the whole model (the usual fine-tuning schedule of fast.ai's ``fine_tune``). Decided at each epoch start
    from the epoch number, so a resumed run freezes or not as the original did.

    Raises:
        ValueError: the model has no ``backbone`` module.
    """
    set_backbone_trainable(model, freeze_epochs == 0)  # fails early on a model without a backbone

    def freeze(engine: Engine) -> None:
        trainable = engine.state.epoch > freeze_epochs
        set_backbone_trainable(model, trainable)
        if engine.state.epoch == freeze_epochs + 1:
            logger.info("epoch %d: backbone unfrozen", engine.state.epoch)

    trainer.add_event_handler(Events.EPOCH_STARTED, freeze)


def attach_validation_log(trainer: Engine, selector: Engine, name: str) -> None:
    """Logs the metrics of ``selector``, the selecting evaluator (`src.training.evaluation.Selection`), named
    ``name``, after each validation inside an epoch (``--val-every``); the epoch-end validation is logged with the
    history row."""

    def log(engine: Engine) -> None:
        state = trainer.state
        if state.iteration % state.epoch_length:
            metrics = " ".join(f"{name}_{k}={v:.4f}" for k, v in engine.state.metrics.items())
            logger.info("iteration %d (epoch %.2f): %s", state.iteration, state.iteration / state.epoch_length, metrics)

    selector.add_event_handler(Events.COMPLETED, log)


def attach_early_stopping(
    trainer: Engine,
    selector: Engine,
    patience: int,
    score_function: Callable[[Engine], float],
    start_epoch: int = 1,
) -> EarlyStopping:
    """Stops training when ``score_function`` (higher is better) of ``selector``, the selecting evaluator
    (`src.training.evaluation.Selection`), has not improved for ``patience`` validations (ignite's `EarlyStopping`),
    counting only validations made in epoch ``start_epoch`` (1-based) or later: the first of them sets the score to
    beat (Keras's ``start_from_epoch``)."""
    handler = EarlyStopping(patience=patience, score_function=score_function, trainer=trainer)

    def watching(engine: Engine, event: int) -> bool:
        return trainer.state.epoch >= start_epoch

    selector.add_event_handler(Events.COMPLETED(event_filter=watching), handler)
    return handler


def attach_tensorboard(
    trainer: Engine,
    evaluators: dict[str, Engine],
    optimizer: torch.optim.Optimizer,
    run_dir: Path,
    log_every: int,
    by_iteration: bool = False,
) -> TensorboardLogger:
    """TensorBoard (tensorboardX) events: ``train/loss`` and ``lr`` every ``log_every`` iterations, and
    every metric of each evaluator at each validation under the evaluator's name (``valid/accuracy``...),
    at the trainer's epoch, or with ``by_iteration`` (validation inside epochs) its iteration."""
    tb_logger = TensorboardLogger(log_dir=str(run_dir))
    tb_logger.attach_output_handler(
        trainer, event_name=Events.ITERATION_COMPLETED(every=log_every), tag="train", output_transform=lambda out: out
    )
    tb_logger.attach_opt_params_handler(
        trainer, event_name=Events.ITERATION_STARTED(every=log_every), optimizer=optimizer
    )
    for name, evaluator in evaluators.items():
        tb_logger.attach_output_handler(
            evaluator,
            event_name=Events.COMPLETED,
            tag=name,
            metric_names="all",
            global_step_transform=global_step_from_engine(
                trainer, Events.ITERATION_COMPLETED if by_iteration else Events.EPOCH_COMPLETED
            ),
        )
    return tb_logger


def attach_progress_bar(
    trainer: Engine,
    every: int = 1,
    desc: str = "",
    interactive: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Progress: ``<desc> [epoch/epochs]``, the micro-batch loss every ``every`` iterations (each read waits for the
    device) and the whole run's remaining time, ``run_eta``, from the pace since this process started (validations
    included).

    On a terminal (``interactive``; None: whether stderr is one) it is ignite's progress bar. Elsewhere (SLURM,
    nohup, a notebook's log file) a bar is redrawn per iteration as carriage returns that pile up in the file (353 KB
    for one 18-epoch digits run), so the progress is instead one logged line at most every `LOG_LINE_SECONDS`
    (``clock``'s seconds) and one at the end of each epoch:
    ``fold 0 [1/5] epoch [3/18] iteration 40/62: loss 0.1234, run_eta 5 min``.
    """
    pace = {"start": 0.0, "first": 0, "line": -float("inf"), "line_iteration": 0}

    def start(engine: Engine) -> None:
        pace.update(start=clock(), first=engine.state.iteration)

    def eta() -> str:
        state = trainer.state
        done = state.iteration - pace["first"]
        left = state.max_epochs * state.epoch_length - state.iteration
        return format_duration((clock() - pace["start"]) / max(done, 1) * left)

    trainer.add_event_handler(Events.STARTED, start)
    desc = desc or "epoch"
    if interactive if interactive is not None else sys.stderr.isatty():
        ProgressBar(persist=False, desc=desc).attach(
            trainer,
            output_transform=lambda out: {"loss": out["loss"], "run_eta": eta()},
            event_name=Events.ITERATION_COMPLETED(every=every),
        )
        return

    def line(engine: Engine, end_of_epoch: bool = False) -> None:
        state = engine.state
        due = end_of_epoch or clock() - pace["line"] >= LOG_LINE_SECONDS
        if not due or pace["line_iteration"] == state.iteration:  # once per iteration
            return
        pace.update(line=clock(), line_iteration=state.iteration)
        within = (state.iteration - 1) % state.epoch_length + 1
        logger.info(
            "%s [%d/%d] iteration %d/%d: loss %.4g, run_eta %s",
            desc, state.epoch, state.max_epochs, within, state.epoch_length, float(state.output["loss"]), eta(),
        )

    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every), line)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, line, True)


def attach_terminate_on_nan(trainer: Engine, every: int = 1) -> None:
    """Stops training when the loss is NaN or infinite, checked every ``every`` iterations (ignite's
    `TerminateOnNan`; with several processes all stop together when any one's loss is not finite, or the others
    would wait for it forever)."""
    if distributed.world_size() == 1:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every), TerminateOnNan())
        return

    def check(engine: Engine) -> None:
        finite = torch.isfinite(engine.state.output["loss"]).all().float()
        if idist.all_reduce(finite, op="MIN").item() == 0:
            logger.warning("iteration %d: the loss is not finite in a process; stopping", engine.state.iteration)
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every), check)
