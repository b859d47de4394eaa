"""Train a classifier: ``python -m src.train --arch effnet-b0 [flags]`` (``--help`` lists the flags).

run(config) reads top to bottom: setup_data -> setup_model -> setup_trainer -> setup_evaluators ->
attach_handlers -> trainer.run -> summary.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EMAHandler
from ignite.utils import manual_seed, setup_logger
from torch.optim.swa_utils import AveragedModel

from src.config import CONFIG_FILENAME, Config, parse_config, resolve_run_dir, save_config
from src.engine import create_evaluator, create_trainer, make_metrics, predict_logits, validation_filter
from src.handlers import (
    HISTORY_FILENAME,
    History,
    attach_checkpoints,
    attach_early_stopping,
    attach_ema,
    attach_evaluation,
    attach_freezing,
    attach_history,
    attach_lr_scheduler,
    attach_model_file,
    attach_progress_bar,
    attach_progressive_resizing,
    attach_swa,
    attach_tensorboard,
    attach_terminate_on_nan,
    attach_training_metrics,
    attach_validation_log,
    build_ema,
    build_swa,
    resume_from,
)
from src.loaddata import Data, Loaders, assign_folds, build_loaders, default_num_workers, load_data, split_indices
from src.losses import CenterLoss, center_optimizer, task_criterion
from src.metrics import get_metric, ignite_metric, to_probs
from src.mixup import Mixup
from src.model import SEQUENCE_ARCHS, build_model, check_arch, describe_archs
from src.oof import PREDICTIONS_FILENAME, predictions_frame
from src.optim import build_lr_scheduler, build_optimizer
from src.pseudo import pseudo_labelled
from src.targets import Task

DRY_RUN_FRACTION = 0.01
CLASSES_FILENAME = "classes.json"
FOLDS_FILENAME = "folds.csv"
SUMMARY_FILENAME = "summary.json"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return device


def setup_data(
    config: Config, device: torch.device, logger: logging.Logger
) -> tuple[Loaders, Config, Data, np.ndarray]:
    """Reads and checks the data, assigns the folds and builds the loaders.

    Returns:
        The loaders, the config with the inferred fields resolved (num_classes, in_chans, num_workers, and the
        train fold's normalisation mean/std),
        the data, and the fold of every row (int64 (N,)).
    """
    data = load_data(config, logger)
    get_metric(config.metric, data.task)  # a metric the task kind cannot use stops here
    if (config.arch in SEQUENCE_ARCHS) != bool(getattr(data.source.images, "sequence", False)):
        raise ValueError(
            f"--arch {config.arch} reads QuickDraw strokes as point sequences (--layout strokes)"
            if config.arch in SEQUENCE_ARCHS
            else f"--arch {config.arch} takes images, not point sequences"
        )
    split_seed = config.seed if config.split_seed is None else config.split_seed
    fold_of = assign_folds(data, config.folds, split_seed, config.group_col, config.fold_col)
    fraction = DRY_RUN_FRACTION if config.dry_run else config.data_fraction
    train_idx, valid_idx = split_indices(
        fold_of, config.fold, split_seed, fraction=fraction, min_train=config.batch_size
    )
    if len(valid_idx) == 0:
        raise ValueError(f"--fold {config.fold}: no rows in this fold of {config.folds}")
    num_workers = config.num_workers if config.num_workers is not None else default_num_workers(device)
    loaders = build_loaders(
        data,
        train_idx,
        valid_idx,
        img_size=config.img_size_at(0),
        batch_size=config.batch_size,
        aug=config.aug,
        num_workers=num_workers,
        train_eval_size=config.train_eval_size,
        seed=config.seed,
        pin_memory=device.type == "cuda",
        resize_mode=config.resize_mode,
        mean=config.mean_list,
        std=config.std_list,
        resizable=len(config.size_schedule) > 1,
        extra_train=pseudo_labelled(config, data.task, logger) if config.pseudo_labels else None,
    )
    task = data.task
    if task.kind != "multihead" and config.num_classes is not None and config.num_classes < task.num_outputs:
        raise ValueError(f"--num-classes {config.num_classes}: the data has {task.num_outputs} classes")
    resolved = dataclasses.replace(
        config,
        num_classes=task.num_outputs if task.kind == "multihead" else (config.num_classes or task.num_outputs),
        in_chans=data.in_chans,
        num_workers=num_workers,
        # the train fold's normalisation, saved with the run so that prediction normalises the same way
        mean=",".join(f"{v:.6f}" for v in loaders.mean) if loaders.mean else config.mean,
        std=",".join(f"{v:.6f}" for v in loaders.std) if loaders.std else config.std,
    )
    if config.in_chans is not None and config.in_chans != data.in_chans:
        raise ValueError(f"--in-chans {config.in_chans}: the images have {data.in_chans} channels")
    return loaders, resolved, data, fold_of


def setup_model(config: Config, task: Task, device: torch.device) -> torch.nn.Module:
    model = build_model(
        config.arch,
        num_classes=task.sizes if task.kind == "multihead" else config.num_classes,
        in_chans=config.in_chans,
        pretrained=config.pretrained,
        activation=config.activation,
        drop_rate=config.drop_rate,
        drop_path_rate=config.drop_path_rate,
        head=config.head,
        margin=config.margin,
        scale=config.margin_scale,
        output_stride=config.output_stride,
        arch_options=(
            {"hidden_size": config.hidden_size, "num_layers": config.num_layers}
            if config.arch in SEQUENCE_ARCHS
            else None
        ),
    )
    return model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)


def setup_trainer(config: Config, model, task: Task, loaders: Loaders, device: torch.device):
    """Builds the optimizer, schedule, criterion, mixup and the trainer; returns them with ``to_save``."""
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay, config.backbone_lr_mult)
    epoch_length = _epoch_length(config, loaders)
    steps_per_epoch = epoch_length / config.accumulation_steps
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    lr_scheduler = build_lr_scheduler(
        config.scheduler,
        optimizer,
        config.lr,
        total_steps=int(config.epochs * steps_per_epoch),
        warmup_steps=warmup_steps,
        metric=config.metric,
        higher_is_better=get_metric(config.metric).higher_is_better,
    )
    mixup = (
        Mixup(config.mixup_alpha, config.num_classes, config.mixup_k, seed=config.seed, to_soft=task.to_soft)
        if config.mixup_alpha > 0
        else None
    )
    if config.amp == "fp16" and device.type != "cuda":
        logging.getLogger("src.train").warning("--amp fp16 needs CUDA; training in fp32 on %s", device)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16" and device.type == "cuda")
    center_loss = center_opt = None
    if config.center_loss > 0:
        if task.kind != "single":
            raise ValueError("--center-loss needs a single-label task (one center per class)")
        center_loss = CenterLoss(config.num_classes, model.num_features, config.center_loss).to(device)
        center_opt = center_optimizer(center_loss, config.center_lr)
    trainer = create_trainer(
        compiled(model, config),
        optimizer,
        task_criterion(
            task, config.label_smoothing, config.loss, config.focal_gamma, getattr(model.fc, "margin_loss", None)
        ),
        device,
        accumulation_steps=config.accumulation_steps,
        clip_grad_norm=config.clip_grad_norm,
        amp=config.amp,
        mixup=mixup,
        scaler=scaler,
        channels_last=config.channels_last,
        feature_loss=center_loss,
        feature_optimizer=center_opt,
    )
    averages = Averages(
        ema=build_ema(model, config.ema, warmup_steps=warmup_steps) if config.ema else None,
        swa=build_swa(model) if config.swa_start_epoch else None,
    )
    to_save = {"trainer": trainer, "model": model, "optimizer": optimizer}
    for name, obj in (
        ("lr_scheduler", lr_scheduler),
        ("mixup", mixup),
        ("ema_model", averages.ema and averages.ema.ema_model),
        ("swa_model", averages.swa),
        ("center_loss", center_loss),
        ("center_optimizer", center_opt),
    ):
        if obj is not None:
            to_save[name] = obj
    if scaler.is_enabled():
        to_save["scaler"] = scaler
    return trainer, optimizer, lr_scheduler, averages, to_save


@dataclasses.dataclass
class Averages:
    """The weight averages of a run: ``--ema`` (ignite's `EMAHandler`) and ``--swa-start-epoch`` (torch's
    `AveragedModel`); None when off."""

    ema: EMAHandler | None = None
    swa: AveragedModel | None = None


def setup_evaluators(
    config: Config, model, task: Task, averages: Averages | None = None, device: torch.device | None = None
) -> dict[str, Engine]:
    """One evaluator per (model, loader): the train subset (valid-time transforms) and the valid fold with the
    trained model; the valid fold again with the EMA model ("valid_ema", ``--ema``) and the SWA model
    ("valid_swa", ``--swa-start-epoch``)."""
    models = {"train_eval": model, "valid": model}
    if averages is not None and averages.ema is not None:
        models["valid_ema"] = averages.ema.ema_model
    if averages is not None and averages.swa is not None:
        models["valid_swa"] = averages.swa
    return {
        name: create_evaluator(
            compiled(net, config),
            evaluator_metrics(config, task),
            device,
            amp=config.amp,
            channels_last=config.channels_last,
        )
        for name, net in models.items()
    }


def evaluator_metrics(config: Config, task: Task) -> dict:
    """The task's standard metrics (`src.engine.make_metrics`) plus the competition ``--metric``."""
    metrics = make_metrics(task)
    if config.metric not in metrics:
        metrics[config.metric] = ignite_metric(config.metric, task, config.threshold)
    return metrics


def compiled(model: torch.nn.Module, config: Config) -> torch.nn.Module:
    """``torch.compile(model)`` with ``--compile`` (it shares the model's parameters; optimizer, checkpoints and
    weight averages keep using the plain model), else the model itself."""
    return torch.compile(model) if config.compile else model


def selection_name(config: Config) -> str:
    """The evaluator whose ``--metric`` picks the best checkpoint and drives early stopping and the plateau schedule:
    the EMA model's with ``--ema`` (the weights one would submit), else the trained model's."""
    return "valid_ema" if config.ema else "valid"


def attach_handlers(
    config: Config,
    trainer: Engine,
    evaluators: dict[str, Engine],
    loaders: Loaders,
    model,
    optimizer,
    lr_scheduler,
    averages: Averages,
    to_save: dict,
    run_dir: Path | None,
    logger: logging.Logger,
    device: torch.device,
) -> tuple[History, list, Checkpoint | None]:
    select = selection_name(config)
    selector = evaluators[select]
    ema = averages.ema
    attach_terminate_on_nan(trainer)
    attach_training_metrics(trainer)
    if ema is not None:
        attach_ema(trainer, ema, config.accumulation_steps)
        if getattr(ema, "momentum_scheduler", None) is not None:  # only set with a warmup
            to_save["ema_momentum_scheduler"] = ema.momentum_scheduler
    attach_lr_scheduler(trainer, selector, lr_scheduler, config.accumulation_steps)
    loader_of = {"train_eval": loaders.train_eval, "valid": loaders.valid, "valid_ema": loaders.valid}
    attach_evaluation(
        trainer,
        {name: (evaluator, loader_of[name]) for name, evaluator in evaluators.items() if name != "valid_swa"},
        validation_event(config, _epoch_length(config, loaders)),
    )
    if averages.swa is not None:  # after each epoch: average, BatchNorm statistics, validation
        attach_swa(
            trainer,
            averages.swa,
            model,
            config.swa_start_epoch,
            loaders.train_eval,  # its own RNG: recomputing BatchNorm statistics must not change the training run
            evaluators["valid_swa"],
            loaders.valid,
            device,
        )
    if config.val_every is not None:
        attach_validation_log(trainer, evaluators[select], select, logger)
    higher = get_metric(config.metric).higher_is_better
    to_save["early_stopping"] = attach_early_stopping(
        trainer, selector, config.patience, config.metric, higher, start_epoch=config.early_stopping_start
    )
    history = History(run_dir / HISTORY_FILENAME if run_dir else None)
    if config.freeze_epochs:
        attach_freezing(trainer, model, config.freeze_epochs, logger)
    if len(config.size_schedule) > 1:
        attach_progressive_resizing(trainer, loaders, config.img_size_at, config.seed, logger)
    attach_history(trainer, evaluators, optimizer, history, logger, img_size=lambda: loaders.img_size)
    closers, last_checkpoint = [], None
    if run_dir is not None:
        if averages.swa is not None:
            to_save["swa_checkpoint"] = attach_model_file(
                evaluators["valid_swa"], averages.swa.module, run_dir, "swa", trainer
            )
        best_model = ema.ema_model if ema is not None else model
        _, last_checkpoint = attach_checkpoints(
            trainer,
            selector,
            to_save,
            best_model,
            run_dir,
            config.n_saved,
            score_name=f"{select}_{config.metric}",
            by_iteration=config.val_every is not None,
            metric=config.metric,
            higher_is_better=higher,
        )
        closers.append(
            attach_tensorboard(
                trainer, evaluators, optimizer, run_dir, config.log_every, by_iteration=config.val_every is not None
            )
        )
    if config.progress:
        attach_progress_bar(trainer)
    return history, closers, last_checkpoint


def validation_event(config: Config, epoch_length: int):
    """When the evaluators run: after every epoch, or with ``--val-every`` also inside epochs (see
    `src.engine.validation_filter`)."""
    if config.val_every is None:
        return Events.EPOCH_COMPLETED
    return Events.ITERATION_COMPLETED(
        event_filter=validation_filter(config.val_every, epoch_length, config.accumulation_steps)
    )


def setup_run_dir(config: Config) -> Path | None:
    """Creates the run folder and saves the resolved config and class list; None for a dry run."""
    if config.dry_run:
        return None
    if config.resume:
        run_dir = resolve_run_dir(config.resume)
    else:
        name = config.run_name or f"{config.arch}-fold{config.fold}-{datetime.now():%Y%m%d-%H%M%S}"
        run_dir = Path(config.output_dir) / name
        if run_dir.exists() and any(run_dir.glob("*.pt")):
            raise ValueError(
                f"run folder {run_dir} already holds checkpoints; pass --resume {run_dir} or another --run-name"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    # Without the folder-specific fields, `--config <run>/config.yaml` repeats the run in a new folder.
    save_config(dataclasses.replace(config, run_name=None, resume=None), run_dir / CONFIG_FILENAME)
    return run_dir


def save_data_description(run_dir: Path, data: Data, fold_of: np.ndarray) -> None:
    """Writes ``classes.json`` (the task: kind, label columns, class lists, head weights; used by prediction)
    and ``folds.csv`` (id, fold of every row)."""
    (run_dir / CLASSES_FILENAME).write_text(json.dumps(data.task.to_dict(), indent=1))
    pd.DataFrame({"id": data.source.ids(), "fold": fold_of}).to_csv(run_dir / FOLDS_FILENAME, index=False)


def save_valid_predictions(
    run_dir: Path,
    best: Checkpoint,
    model: torch.nn.Module,
    loaders: Loaders,
    data: Data,
    fold_of: np.ndarray,
    config: Config,
    device: torch.device,
) -> Path:
    """Loads the best checkpoint into ``model`` and writes its valid-fold probabilities to ``valid_predictions.csv``
    (id, fold, labels, one column per class; `src.oof`). Returns the checkpoint's path."""
    model.load_state_dict(torch.load(best.last_checkpoint, map_location=device, weights_only=True))  # dir/file
    logits = predict_logits(model, loaders.valid, device, amp=config.amp, channels_last=config.channels_last)
    rows, ids = loaders.valid_rows, data.source.ids()
    frame = predictions_frame(
        [ids[i] for i in rows],
        to_probs(logits, data.task),
        data.task,
        folds=fold_of[rows],
        labels=data.source.table.iloc[rows],
    )
    frame.to_csv(run_dir / PREDICTIONS_FILENAME, index=False)
    return Path(best.last_checkpoint)


def find_checkpoint(resume: str) -> Path:
    """The checkpoint to resume from: the file itself, or the newest ``checkpoint_<epoch>.pt`` of a run folder.

    Raises:
        FileNotFoundError: no such file, or a folder without checkpoints.
    """
    path = Path(resume)
    if path.is_file():
        return path
    candidates = (
        sorted(path.glob("checkpoint_*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1])) if path.is_dir() else []
    )
    if not candidates:
        raise FileNotFoundError(f"--resume {resume}: no checkpoint file, nor a run folder holding checkpoint_*.pt")
    return candidates[-1]


def _epoch_length(config: Config, loaders: Loaders) -> int:
    length = len(loaders.train)
    return min(length, config.max_iters_per_epoch) if config.max_iters_per_epoch else length


def run(config: Config) -> dict:
    """Trains one fold as configured and returns the summary (best valid accuracy, its epoch, wall time, run folder)."""
    start = time.perf_counter()
    logger = setup_logger("src.train", level=logging.INFO)
    check_arch(config.arch)
    if config.dry_run:
        config = dataclasses.replace(config, epochs=1)
    checkpoint = find_checkpoint(config.resume) if config.resume else None
    manual_seed(config.seed)
    device = resolve_device(config.device)
    loaders, config, data, fold_of = setup_data(config, device, logger)
    model = setup_model(config, data.task, device)
    run_dir = setup_run_dir(config)
    if run_dir is not None:
        save_data_description(run_dir, data, fold_of)
    trainer, optimizer, lr_scheduler, averages, to_save = setup_trainer(config, model, data.task, loaders, device)
    evaluators = setup_evaluators(config, model, data.task, averages, device)
    history, closers, last_checkpoint = attach_handlers(
        config, trainer, evaluators, loaders, model, optimizer, lr_scheduler, averages, to_save, run_dir, logger, device
    )
    if checkpoint is not None:
        missing = resume_from(checkpoint, to_save, last_checkpoint)
        logger.info(
            "resumed from %s at epoch %d, iteration %d%s",
            checkpoint,
            trainer.state.epoch,
            trainer.state.iteration,
            f" (not in the checkpoint, left fresh: {missing})" if missing else "",
        )
    logger.info(
        "%s on %s: %d train / %d valid images, %s",
        config.arch,
        device,
        len(loaders.train.dataset),
        len(loaders.valid.dataset),
        "dry run (no files written)" if run_dir is None else f"run folder {run_dir}",
    )
    try:
        if checkpoint is not None and trainer.state.epoch >= config.epochs:  # ignite would restart it from epoch 0
            logger.info(
                "the run has already trained %d epochs of --epochs %d: nothing to train (pass a larger --epochs to "
                "go on); writing its predictions and summary",
                trainer.state.epoch,
                config.epochs,
            )
        else:
            trainer.run(loaders.train, max_epochs=config.epochs, epoch_length=_epoch_length(config, loaders))
    finally:
        for closer in closers:
            closer.close()
    predicted_by = None
    if run_dir is not None:
        predicted_by = save_valid_predictions(
            run_dir, to_save["best_checkpoint"], model, loaders, data, fold_of, config, device
        )
    key = f"{selection_name(config)}_{config.metric}"
    best = history.best(key, get_metric(config.metric).higher_is_better) or {}
    summary = {
        "best_valid_score": best.get(key),
        "best_epoch": best.get("epoch"),
        "selected_by": key,
        "epochs_run": trainer.state.epoch,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "train_images_per_s": round(sum(r["train_images_per_s"] for r in history.rows) / max(len(history.rows), 1), 1),
        "run_dir": str(run_dir) if run_dir else None,
        "predictions_from": predicted_by.name if predicted_by else None,  # the checkpoint behind valid_predictions
    }
    logger.info("summary: %s", json.dumps(summary))
    if run_dir is not None:  # marks the run as finished (`--fold all` skips finished folds)
        (run_dir / SUMMARY_FILENAME).write_text(json.dumps(summary, indent=1))
    print(
        f"best {key.replace('_', ' ')} {summary['best_valid_score']} at epoch {summary['best_epoch']} "
        f"({summary['epochs_run']} epochs, {summary['wall_time_s']} s, "
        f"{summary['train_images_per_s']} train images/s); "
        f"run folder: {summary['run_dir'] or 'none (dry run)'}"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_config(argv)
        if config.list_archs:
            print("\n".join(describe_archs()))
            return 0
        if config.fold == "all" and not config.dry_run:
            from src.cv import run_all_folds  # src.cv imports this module (it calls run() per fold)

            run_all_folds(config)
        else:
            run(dataclasses.replace(config, fold=0) if config.fold == "all" else config)  # a dry run checks fold 0
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: the last complete checkpoint_<epoch>.pt is intact; continue with --resume <run folder>",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
