"""Handlers attached to the engines by event: evaluation, schedules, checkpoints, early stopping, logging."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import (
    Checkpoint,
    DiskSaver,
    EarlyStopping,
    EMAHandler,
    ParamScheduler,
    ProgressBar,
    ReduceLROnPlateauScheduler,
    TensorboardLogger,
    TerminateOnNan,
    global_step_from_engine,
)
from ignite.metrics import Average, RunningAverage
from torch.optim.swa_utils import AveragedModel, update_bn

from src.engine import optimizer_step_filter, window_start_filter
from src.optim import set_backbone_trainable

HISTORY_FILENAME = "history.csv"
BEST_PREFIX = "best"


class History:
    """Per-epoch metrics, kept in memory and, with a path, appended to a CSV file (one row per epoch).

    On resume the rows already in the file are read back, so the summary covers the whole run.
    """

    def __init__(self, path: Path | None = None):
        self.path = path
        self.rows: list[dict] = []
        if path is not None and path.is_file():
            with path.open(newline="") as f:
                self.rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def record(self, row: dict) -> None:
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]  # a resumed epoch replaces its row
        if self.path is not None:
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                writer.writeheader()
                writer.writerows(self.rows)

    def best(self, key: str = "valid_accuracy", higher_is_better: bool = True) -> dict | None:
        """The row with the best ``key`` (highest, or lowest when not ``higher_is_better``; the earliest one on
        ties), or None before the first epoch."""
        sign = 1 if higher_is_better else -1
        return max(self.rows, key=lambda r: sign * r[key]) if self.rows else None


def _number(text: str) -> float | int | None:
    if text == "":  # a metric that was not computed that epoch (e.g. SWA before it starts)
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def attach_training_metrics(trainer: Engine) -> None:
    """Running average of the loss (for the progress bar) and the epoch mean (for the history)."""
    RunningAverage(output_transform=lambda out: out["loss"]).attach(trainer, "running_loss")
    Average(output_transform=lambda out: out["loss"]).attach(trainer, "loss")


def attach_lr_scheduler(
    trainer: Engine, valid_evaluator: Engine, lr_scheduler: ParamScheduler | None, accumulation_steps: int
) -> None:
    """Step-wise schedules run before each optimizer step; the plateau schedule after each validation."""
    if lr_scheduler is None:
        return
    if isinstance(lr_scheduler, ReduceLROnPlateauScheduler):
        valid_evaluator.add_event_handler(Events.COMPLETED, lr_scheduler)
    else:
        trainer.add_event_handler(
            Events.ITERATION_STARTED(event_filter=window_start_filter(accumulation_steps)), lr_scheduler
        )


def build_ema(model: torch.nn.Module, decay: float, warmup_steps: int = 0) -> EMAHandler:
    """An exponential moving average of the weights (Polyak & Juditsky 1992; timm's ModelEma), ignite's `EMAHandler`.

    After each optimizer step, ``ema = decay * ema + (1 - decay) * weights``; BatchNorm running statistics
    are averaged the same way (``handle_buffers="update"``). With ``warmup_steps`` the decay rises linearly
    from 0 (a plain copy) to ``decay`` over that many optimizer steps, so the average does not keep the
    random initial weights.

    Args:
        model: the trained model; the EMA copy (``handler.ema_model``, in eval mode) is made from it.
        decay: in (0, 1), per optimizer step; the average spans about ``1 / (1 - decay)`` steps.
        warmup_steps: optimizer steps of the decay warmup; 0 uses ``decay`` from the first step.

    Raises:
        ValueError: ``decay`` is not in (0, 1).
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"--ema {decay!r}: expected a decay in (0, 1), e.g. 0.999 (0 turns EMA off)")
    if warmup_steps > 1:
        return EMAHandler(
            model, momentum=1.0 - decay, momentum_warmup=1.0, warmup_iters=warmup_steps, handle_buffers="update"
        )
    return EMAHandler(model, momentum=1.0 - decay, handle_buffers="update")


def attach_ema(trainer: Engine, ema: EMAHandler, accumulation_steps: int) -> None:
    """Updates the EMA once per optimizer step (the last micro-batch of each accumulation window)."""
    ema.attach(
        trainer,
        name="ema_momentum",
        warn_if_exists=False,
        event=Events.ITERATION_COMPLETED(event_filter=optimizer_step_filter(accumulation_steps)),
    )


def build_swa(model: torch.nn.Module) -> AveragedModel:
    """Stochastic weight averaging (Izmailov et al. 2018, https://arxiv.org/abs/1803.05407): an equal-weight
    running average of the weights, torch's `AveragedModel` (its BatchNorm statistics are recomputed, see
    `attach_swa`)."""
    return AveragedModel(model)


def attach_swa(
    trainer: Engine,
    swa_model: AveragedModel,
    model: torch.nn.Module,
    start_epoch: int,
    bn_loader,
    evaluator: Engine,
    eval_loader,
    device: torch.device,
) -> None:
    """From epoch ``start_epoch`` (1-based) on, at the end of every epoch: adds the weights to the average,
    recomputes its BatchNorm running statistics over ``bn_loader`` (torch's `update_bn`: one pass, no
    gradients) and runs ``evaluator`` on ``eval_loader``.
    """

    def update(engine: Engine) -> None:
        if engine.state.epoch < start_epoch:
            return
        swa_model.update_parameters(model)
        # update_bn runs the model in train mode: its dropout and drop-path draws must not move the global RNG,
        # or averaging would change the rest of the training run.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            update_bn(bn_loader, swa_model, device=device)
        evaluator.run(eval_loader)

    trainer.add_event_handler(Events.EPOCH_COMPLETED, update)


def attach_model_file(
    evaluator: Engine, module: torch.nn.Module, run_dir: Path, prefix: str, trainer: Engine
) -> Checkpoint:
    """After each run of ``evaluator``, saves ``module``'s state dict as ``<prefix>_model_<epoch>.pt`` (only the
    newest kept, replaced atomically). Returns the handler; put it in ``to_save`` so a resumed run goes on
    replacing its file."""
    saver = Checkpoint(
        {"model": module},
        SafeDiskSaver(run_dir),
        filename_prefix=prefix,
        n_saved=1,
        global_step_transform=global_step_from_engine(trainer),
    )
    evaluator.add_event_handler(Events.COMPLETED, saver)
    return saver


def attach_evaluation(trainer: Engine, evaluators: dict[str, tuple[Engine, object]], every: Events) -> None:
    """Runs each ``name -> (evaluator, loader)`` on ``every`` trainer event, in the given order."""

    def evaluate(engine: Engine) -> None:
        for evaluator, loader in evaluators.values():
            evaluator.run(loader)

    trainer.add_event_handler(every, evaluate)


def attach_progressive_resizing(
    trainer: Engine, loaders, size_at: Callable[[int], int], seed: int, logger: logging.Logger
) -> None:
    """Progressive resizing (fast.ai's DAWNBench recipe, Howard 2018; Touvron et al. 2019 on train/test size):
    at the start of each epoch, switches the train and evaluation pipelines to ``size_at(epoch - 1)`` pixels
    when that differs from the current size, and restarts the train iterator so the new size applies to the
    whole epoch (also on the first epoch of a resumed run, and with worker processes).

    Args:
        trainer: the training engine.
        loaders: the run's `src.loaddata.Loaders` (built with ``resizable=True`` when workers are used).
        size_at: 0-based epoch -> image side in pixels.
        seed: the train augmentation is re-seeded with ``seed + epoch`` at each change.
        logger: logs each change.
    """

    def resize(engine: Engine) -> None:
        size = size_at(engine.state.epoch - 1)
        if size != loaders.img_size:
            loaders.set_img_size(size, seed + engine.state.epoch)
            engine.set_data(loaders.train)
            logger.info("epoch %d: image size %d px", engine.state.epoch, size)

    trainer.add_event_handler(Events.EPOCH_STARTED, resize)


def attach_freezing(trainer: Engine, model: torch.nn.Module, freeze_epochs: int, logger: logging.Logger) -> None:
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


def attach_validation_log(trainer: Engine, evaluator: Engine, name: str, logger: logging.Logger) -> None:
    """Logs the selecting evaluator's metrics after each validation inside an epoch (`--val-every`); the
    epoch-end validation is logged with the history row."""

    def log(engine: Engine) -> None:
        state = trainer.state
        if state.iteration % state.epoch_length:
            metrics = " ".join(f"{name}_{k}={v:.4f}" for k, v in engine.state.metrics.items())
            logger.info("iteration %d (epoch %.2f): %s", state.iteration, state.iteration / state.epoch_length, metrics)

    evaluator.add_event_handler(Events.COMPLETED, log)


def score_function(metric: str = "accuracy", higher_is_better: bool = True) -> Callable[[Engine], float]:
    """An evaluator's ``metric``, signed so that higher is better (for `Checkpoint` and `EarlyStopping`)."""
    return Checkpoint.get_default_score_fn(metric, 1.0 if higher_is_better else -1.0)


def attach_early_stopping(
    trainer: Engine,
    valid_evaluator: Engine,
    patience: int,
    metric: str = "accuracy",
    higher_is_better: bool = True,
    start_epoch: int = 1,
) -> EarlyStopping:
    """Stops training when the valid ``metric`` has not improved for ``patience`` validations (ignite's
    `EarlyStopping`), counting only validations made in epoch ``start_epoch`` (1-based) or later: the first of
    them sets the score to beat (Keras's ``start_from_epoch``)."""
    handler = EarlyStopping(patience=patience, score_function=score_function(metric, higher_is_better), trainer=trainer)

    def watching(engine: Engine, event: int) -> bool:
        return trainer.state.epoch >= start_epoch

    valid_evaluator.add_event_handler(Events.COMPLETED(event_filter=watching), handler)
    return handler


def attach_history(
    trainer: Engine,
    evaluators: dict[str, Engine],
    optimizer,
    history: History,
    logger: logging.Logger,
    img_size: Callable[[], int] | None = None,
) -> None:
    """After the epoch's evaluations, records and logs one row: epoch, lr, (image size), losses, accuracies, speed."""

    def record(engine: Engine) -> None:
        epoch_time = engine.state.times[Events.EPOCH_COMPLETED.name] or math.nan
        images = engine.state.epoch_length * engine.state.dataloader.batch_size
        row = {
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": engine.state.metrics["loss"],
        }
        if img_size is not None:
            row["img_size"] = img_size()
        for name, evaluator in evaluators.items():
            row.update({f"{name}_{metric}": value for metric, value in evaluator.state.metrics.items()})
        row.update({"epoch_time_s": round(epoch_time, 3), "train_images_per_s": round(images / epoch_time, 1)})
        history.record(row)
        logger.info(
            "epoch %d: "
            + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"),
            engine.state.epoch,
        )

    trainer.add_event_handler(Events.EPOCH_COMPLETED, record)


class SafeDiskSaver(DiskSaver):
    """An atomic `DiskSaver` that deletes a replaced checkpoint only after its successor is on disk.

    ignite's `Checkpoint` asks its saver to remove the file being replaced *before* writing the new one,
    so with ``n_saved=1`` a crash or Ctrl-C during the write would leave no checkpoint at all. Here the
    removal waits until the new file has been written to a temporary name and renamed into place.
    """

    def __init__(self, dirname: Path | str):
        super().__init__(dirname, atomic=True, require_empty=False)
        self._pending: list[str] = []

    def remove(self, filename: str) -> None:
        self._pending.append(filename)

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        super().__call__(checkpoint, filename, metadata)
        while self._pending:
            name = self._pending.pop()
            if name != filename:  # re-saving under the same name has already replaced it atomically
                (self.dirname / name).unlink(missing_ok=True)


def attach_checkpoints(
    trainer: Engine,
    valid_evaluator: Engine,
    to_save: dict,
    model,
    run_dir: Path,
    n_saved: int,
    score_name: str = "valid_accuracy",
    by_iteration: bool = False,
    metric: str = "accuracy",
    higher_is_better: bool = True,
) -> tuple[Checkpoint, Checkpoint]:
    """Best model by the ``metric`` of ``valid_evaluator`` (``best_model_<epoch>_<score_name>=<score>.pt``, the
    ``n_saved`` best; a lower-is-better metric's score is written negated, ignite's convention) and the last
    full training state every epoch (``checkpoint_<epoch>.pt``).

    Files are written to a temporary name and renamed, and the previous checkpoint is removed only after
    the new one is complete (`SafeDiskSaver`), so a crash or Ctrl-C never leaves a broken last checkpoint.
    The last-state file also holds its own handler's list of files (``include_self``), so a resumed run
    goes on rotating them (see `resume_from`). With ``by_iteration`` (validation inside epochs) the best
    files are numbered by the trainer's iteration instead of its epoch.

    Returns:
        The best-model and the last-state `Checkpoint` handlers.
    """
    best = Checkpoint(
        {"model": model},
        SafeDiskSaver(run_dir),
        filename_prefix=BEST_PREFIX,
        n_saved=n_saved,
        score_function=score_function(metric, higher_is_better),
        score_name=score_name,
        global_step_transform=(lambda *_: trainer.state.iteration)
        if by_iteration
        else global_step_from_engine(trainer),
    )
    valid_evaluator.add_event_handler(Events.COMPLETED, best)
    to_save["best_checkpoint"] = best  # its list of kept files survives a resume
    last = Checkpoint(
        to_save,
        SafeDiskSaver(run_dir),
        n_saved=1,
        global_step_transform=lambda engine, event: engine.state.epoch,
        include_self=True,
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, last)
    return best, last


def resume_from(path: Path, to_save: dict, last_checkpoint: Checkpoint | None = None) -> list[str]:
    """Loads a ``checkpoint_<epoch>.pt`` into the objects of ``to_save`` (and the last-state handler).

    Args:
        path: the checkpoint file.
        to_save: the same name -> object mapping the checkpoint was saved from.
        last_checkpoint: the run's last-state handler, to go on rotating its files.

    Returns:
        The names in ``to_save`` that the checkpoint did not hold (left as they were).
    """
    state = torch.load(path, map_location="cpu", weights_only=False)
    to_load = {name: obj for name, obj in to_save.items() if name in state}
    Checkpoint.load_objects(to_load=to_load, checkpoint=state)
    if last_checkpoint is not None and "checkpointer" in state:
        last_checkpoint.load_state_dict(state["checkpointer"])
    return sorted(set(to_save) - set(to_load))


def attach_tensorboard(
    trainer: Engine,
    evaluators: dict[str, Engine],
    optimizer,
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


def attach_progress_bar(trainer: Engine) -> None:
    ProgressBar(persist=False).attach(trainer, metric_names=["running_loss"])


def attach_terminate_on_nan(trainer: Engine) -> None:
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
