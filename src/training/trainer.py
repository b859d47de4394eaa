"""The training objects of a run, the handlers the config asks for, resuming, and the run itself.

`Training` holds everything a run updates; what a checkpoint saves and a resume loads is derived from it
(`Training.to_save`), never patched in by the functions that build it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EarlyStopping, EMAHandler, ParamScheduler, TensorboardLogger
from ignite.metrics import Metric
from torch.optim.swa_utils import AveragedModel

from src.config import Config
from src.data.prefetch import DeviceLoader
from src.data.sampling import EpochSampler
from src.inference.oof import predictions_frame, write_predictions
from src.layers.heads import MarginHead
from src.layers.manifold import StageMixer
from src.loaddata import Loaders
from src.losses import CenterLoss, StepAwareLoss, center_optimizer, task_criterion
from src.metrics import to_probs
from src.mixup import MixChoice, Mixup
from src.targets import Task
from src.tracking import rundir
from src.tracking.history import History, attach_history
from src.tracking.mlflow_log import attach_mlflow
from src.tracking.pictures import Pictures, log_hparams
from src.training.assembly import Parts, Steps
from src.training.averaging import attach_ema, attach_swa, build_ema, build_swa, from_epoch
from src.training.checkpoints import (
    attach_best_checkpoint,
    attach_last_checkpoint,
    attach_model_file,
    resume_from,
)
from src.training.engine import FeatureLoss, autocast_dtype, create_trainer, predict_logits
from src.training.evaluation import Selection, compiled, validation_event
from src.training.handlers import (
    attach_early_stopping,
    attach_evaluation,
    attach_freezing,
    attach_lr_scheduler,
    attach_progress_bar,
    attach_progressive_resizing,
    attach_set_epoch,
    attach_tensorboard,
    attach_terminate_on_nan,
    attach_training_metrics,
    attach_validation_log,
)
from src.training.optim import build_lr_scheduler, build_optimizer
from src.training.runstate import AccumulatedGradients, MetricState, RandomStates
from src.training.stopping import StopRequests, attach_stopping
from src.utils import distributed

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Training:
    """Everything a training run updates: the trainer and the objects its iterations change, complete when built
    (`setup_training`). What the handlers attach later is `Attached`, returned by `attach_handlers`."""

    trainer: Engine
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    steps: Steps
    selection: Selection
    device: torch.device
    task: Task
    lr_scheduler: ParamScheduler | None = None
    mixup: Mixup | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: EMAHandler | None = None
    swa_model: AveragedModel | None = None
    center_loss: CenterLoss | None = None
    center_optimizer: torch.optim.Optimizer | None = None

    def to_save(self, handlers: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What a checkpoint holds and a resume loads (ignite's ``to_save``): every object of the run that exists,
        with the state of the handlers that keep one (``handlers``: ``train_loss``, ``early_stopping``,
        ``swa_checkpoint``, ``best_checkpoint``; see `attach_handlers`). The names are the checkpoint file's keys."""
        handlers = handlers or {}
        objects = {
            "trainer": self.trainer,
            "rng": RandomStates(self.device),  # each process's global generators (dropout, drop-path)
            "accumulated_gradients": AccumulatedGradients(self.model),  # a window that spans an epoch's end
            "train_loss": handlers.get("train_loss"),
            "model": self.model,
            "optimizer": self.optimizer,
            "lr_scheduler": self.lr_scheduler,
            "mixup": self.mixup,
            "ema_model": self.ema and self.ema.ema_model,
            "swa_model": self.swa_model,
            "center_loss": self.center_loss,
            "center_optimizer": self.center_optimizer,
            "scaler": self.scaler,
            "ema_momentum_scheduler": getattr(self.ema, "momentum_scheduler", None),  # only with a warmup
            "early_stopping": handlers.get("early_stopping"),
            "swa_checkpoint": handlers.get("swa_checkpoint"),
            "best_checkpoint": handlers.get("best_checkpoint"),  # its list of kept files survives a resume
        }
        return {name: obj for name, obj in objects.items() if obj is not None}

    def models(self) -> dict[str, torch.nn.Module]:
        """The models to validate, by evaluator name (`src.training.evaluation`): the trained model on the train subset
        and the valid fold, then the EMA and SWA weights on the valid fold when they exist."""
        models = {"train_eval": self.model, "valid": self.model}
        if self.ema is not None:
            models["valid_ema"] = self.ema.ema_model
        if self.swa_model is not None:
            models["valid_swa"] = self.swa_model
        return models


@dataclasses.dataclass(frozen=True)
class Attached:
    """What `attach_handlers` attached that the run reads again: the history, the handlers whose state a
    checkpoint keeps, and the checkpoint handlers (None without a run folder).

    Attributes:
        history: one row of metrics per validated epoch (`src.tracking.history.History`).
        loss_metric: the running mean of the training loss over the epoch.
        early_stopping: ignite's `EarlyStopping` on the selecting evaluator.
        to_save: the objects every checkpoint holds (`Training.to_save` with these handlers).
        best_checkpoint, swa_checkpoint, last_checkpoint: the best models by the selecting metric, the SWA
            model file, the two newest full training states.
        tb_logger: TensorBoard's logger (rank 0 with a run folder).
    """

    history: History
    loss_metric: Metric
    early_stopping: EarlyStopping
    to_save: dict[str, Any]
    best_checkpoint: Checkpoint | None = None
    swa_checkpoint: Checkpoint | None = None
    last_checkpoint: Checkpoint | None = None
    tb_logger: TensorboardLogger | None = None


def setup_training(config: Config, model: torch.nn.Module, task: Task, steps: Steps, device: torch.device) -> Training:
    """Builds the optimizer, lr schedule, mixup, center loss, criterion, weight averages and the trainer
    (``optim``, ``regularisation``, ``loss`` and ``step`` groups). With several processes the trainer steps the
    model in DistributedDataParallel (``--sync-bn``: SyncBatchNorm); everything else holds the plain model."""
    selection = Selection.of(config)
    frozen_for_a_while = config.optim.freeze_epochs > 0  # DDP must expect parameters without gradients then
    parallel = distributed.wrap(model, config.step.sync_bn, find_unused_parameters=frozen_for_a_while)
    optimizer = build_optimizer(model, config.optim)
    lr_scheduler = build_lr_scheduler(
        optimizer, config.optim, steps.total, steps.warmup, selection.metric, selection.higher_is_better
    )
    regularisation = config.regularisation
    mixup = None
    if regularisation.mixup_alpha > 0 or regularisation.cutmix_alpha > 0:
        mixup = Mixup(
            regularisation.mixup_alpha,
            config.model.num_classes,
            regularisation.mixup_k,
            seed=config.run.seed,
            to_soft=task.to_soft,
            choice=MixChoice(regularisation.cutmix_alpha, regularisation.mix_prob, regularisation.switch_prob),
            stages=_stage_mixer(config, model),
        )
    if config.step.amp == "fp16" and device.type != "cuda":
        logger.warning("--amp fp16 needs CUDA; training in fp32 on %s", device)
    elif device.type == "cuda":
        logger.info("--amp %s: autocast to %s", config.step.amp, autocast_dtype(config.step.amp, device) or "none")
    center = feature_loss = None
    if config.loss.center_loss > 0:
        if task.kind != "single":
            raise ValueError("--center-loss needs a single-label task (one center per class)")
        center = CenterLoss(config.model.num_classes, model.num_features, config.loss.center_loss).to(device)
        feature_loss = FeatureLoss(distributed.wrap(center), center_optimizer(center, config.loss.center_lr))
    criterion = task_criterion(task, config.loss, model.fc if isinstance(model.fc, MarginHead) else None)
    trainer = create_trainer(compiled(parallel, config), optimizer, criterion, device, config.step, mixup, feature_loss)
    if isinstance(criterion, StepAwareLoss):  # L-softmax's annealed margin weight follows the optimizer steps
        accumulation_steps = config.step.accumulation_steps
        trainer.add_event_handler(
            Events.ITERATION_STARTED,
            lambda: criterion.set_step(optimizer_step=(trainer.state.iteration - 1) // accumulation_steps),
        )
    return Training(
        trainer,
        model,
        optimizer,
        steps,
        selection,
        device,
        task,
        lr_scheduler=lr_scheduler,
        mixup=mixup,
        scaler=trainer.state.scaler if trainer.state.scaler.is_enabled() else None,
        ema=build_ema(model, regularisation.ema, warmup_steps=steps.warmup) if regularisation.ema else None,
        swa_model=build_swa(model) if regularisation.swa_start_epoch else None,
        center_loss=center,
        center_optimizer=feature_loss.optimizer if feature_loss else None,
    )


def _stage_mixer(config: Config, model: torch.nn.Module) -> StageMixer | None:
    """Manifold mixup's stage mixer for ``--mixup-at features``, else None (what it needs of the rest of the
    config was checked before the run started: `src.training.assembly.prepare`).

    Raises:
        ValueError: a model without stages (``--arch gru``).
    """
    if config.regularisation.mixup_at != "features":
        return None
    return StageMixer(model)


def attach_handlers(
    config: Config,
    training: Training,
    evaluators: dict[str, Engine],
    loaders: Loaders,
    run_dir: Path | None,
    cleanup: contextlib.ExitStack,
    requests: StopRequests,
) -> Attached:
    """Attaches every handler the config asks for, by event, in the order they must fire; files only with a run
    folder; last, the saves inside epochs and the clean stop on ``requests``. The TensorBoard logger is closed by
    ``cleanup``. Returns what was attached that the run reads again (`Attached`)."""
    trainer, selection = training.trainer, training.selection
    selector = evaluators[selection.name]  # the evaluator whose metric selects checkpoints and stops early
    attach_terminate_on_nan(trainer, config.run.log_every)
    loss_metric = attach_training_metrics(trainer, training.device)
    attach_set_epoch(trainer, loaders.train)
    if training.ema is not None:
        attach_ema(trainer, training.ema, config.step.accumulation_steps)
    attach_lr_scheduler(trainer, selector, training.lr_scheduler, config.step.accumulation_steps)
    attach_validations(config, training, evaluators, loaders)
    if config.eval.val_every is not None:
        attach_validation_log(trainer, selector, selection.name)
    early_stopping = attach_early_stopping(
        trainer, selector, config.eval.patience, selection.score_function(), start_epoch=config.early_stopping_start
    )
    history = History(run_dir / rundir.HISTORY if run_dir and distributed.is_main() else None)
    if config.optim.freeze_epochs:
        attach_freezing(trainer, training.model, config.optim.freeze_epochs)
    if len(config.loader.size_schedule) > 1:
        attach_progressive_resizing(trainer, loaders, config.loader.img_size_at, config.run.seed)
    attach_history(
        trainer, evaluators, training.optimizer, history, img_size=lambda: loaders.img_size, device=training.device
    )
    kept = {"train_loss": MetricState(loss_metric, training.device), "early_stopping": early_stopping}
    attached = Attached(history, loss_metric, early_stopping, training.to_save(kept))
    if run_dir is not None:
        attached = attach_files(config, training, evaluators, run_dir, cleanup, attached)
        attach_pictures(config, training, evaluators, loaders, attached)
        if config.track.mlflow and distributed.is_main():
            best = functools.partial(best_so_far, history, training.selection)
            cleanup.push(attach_mlflow(config, trainer, evaluators, training.optimizer, run_dir, best))
    if config.run.progress and distributed.is_main():
        split = config.split  # a --fold all run shows its folds too: "fold 2 [3/5] epoch [4/18]"
        attach_progress_bar(trainer, config.run.log_every, f"fold {split.fold} [{split.fold + 1}/{split.folds}] epoch")
    accumulation = config.step.accumulation_steps
    attach_stopping(trainer, requests, attached.last_checkpoint, run_dir, accumulation, config.run)
    return attached


def attach_validations(config: Config, training: Training, evaluators: dict[str, Engine], loaders: Loaders) -> None:
    """Each evaluator on its loader at the validation event (every epoch, or ``--val-every`` iterations), after
    rank 0's BatchNorm statistics are shared; the SWA model after each epoch from ``--swa-start-epoch``, once it
    is averaged and its BatchNorm statistics recomputed."""
    trainer = training.trainer
    loader_of = {"train_eval": loaders.train_eval, "valid": loaders.valid, "valid_ema": loaders.valid}
    each_validation = {name: (evaluators[name], loader_of[name]) for name in evaluators if name in loader_of}
    every = validation_event(config, training.steps.epoch_length)
    evaluated = list(dict.fromkeys(training.models().values()))
    trainer.add_event_handler(every, lambda: distributed.sync_buffers(evaluated))  # rank 0's running statistics
    attach_evaluation(trainer, each_validation, every)
    if training.swa_model is not None:  # after each epoch: average, BatchNorm statistics, validation
        start = config.regularisation.swa_start_epoch
        # the bn loader has its own RNG: recomputing BatchNorm statistics must not change the training run
        attach_swa(trainer, training.swa_model, training.model, start, loaders.bn, training.device)
        attach_evaluation(trainer, {"valid_swa": (evaluators["valid_swa"], loaders.valid)}, from_epoch(start))


def attach_files(
    config: Config,
    training: Training,
    evaluators: dict[str, Engine],
    run_dir: Path,
    cleanup: contextlib.ExitStack,
    attached: Attached,
) -> Attached:
    """The run folder's handlers: the SWA model file, the best and last checkpoints, TensorBoard. Returns
    ``attached`` with them (and the checkpoints' own state in what a checkpoint saves)."""
    trainer, by_iteration = training.trainer, config.eval.val_every is not None
    swa_checkpoint = None
    if training.swa_model is not None:
        swa_model, swa_evaluator = training.swa_model.module, evaluators["valid_swa"]
        swa_checkpoint = attach_model_file(swa_evaluator, swa_model, run_dir, rundir.SWA_PREFIX, trainer)
    best_model = training.ema.ema_model if training.ema is not None else training.model
    selector = evaluators[training.selection.name]  # the evaluator whose metric selects checkpoints and stops early
    best_checkpoint = attach_best_checkpoint(
        trainer,
        selector,
        best_model,
        run_dir,
        config.run.n_saved,
        training.selection,
        by_iteration,
    )
    kept = {**attached.to_save, "swa_checkpoint": swa_checkpoint, "best_checkpoint": best_checkpoint}
    to_save = training.to_save(kept)
    last_checkpoint = attach_last_checkpoint(trainer, to_save, run_dir)
    tb_logger = None
    if distributed.is_main():
        tb_logger = attach_tensorboard(
            trainer, evaluators, training.optimizer, run_dir, config.run.log_every, by_iteration=by_iteration
        )
        cleanup.enter_context(tb_logger)
    return dataclasses.replace(
        attached,
        to_save=to_save,
        best_checkpoint=best_checkpoint,
        swa_checkpoint=swa_checkpoint,
        last_checkpoint=last_checkpoint,
        tb_logger=tb_logger,
    )


def attach_pictures(
    config: Config, training: Training, evaluators: dict[str, Engine], loaders: Loaders, attached: Attached
) -> None:
    """TensorBoard's pictures (`src.tracking.pictures`, ``--pictures``) of the selecting evaluator, and at the end
    of training the hparams: the settings that differ from the defaults with the best score (from the history)."""
    trainer, selection = training.trainer, training.selection
    writer = attached.tb_logger.writer if attached.tb_logger is not None else None
    if config.track.pictures:
        by_iteration = config.eval.val_every is not None
        # TensorBoard's x-axis value: the iteration with validations inside epochs, else the epoch
        global_step = (lambda: trainer.state.iteration) if by_iteration else (lambda: trainer.state.epoch)
        pictures = Pictures(writer, training.task, loaders, config.track.top_losses)
        selector = evaluators[selection.name]
        pictures.attach(trainer, selector, selection.name, global_step)
    if writer is None:
        return

    def hparams() -> None:
        best = best_so_far(attached.history, selection)
        if best:
            log_hparams(writer, rundir.changed_settings(config), {f"hparam/{k}": v for k, v in best.items()})

    trainer.add_event_handler(Events.COMPLETED, hparams)


def best_so_far(history: History, selection: Selection) -> dict[str, float]:
    """``{"best_<key>": score, "best_epoch": epoch}`` from the history, or ``{}`` before the first validation."""
    best = history.best(selection.key, selection.higher_is_better)
    return {f"best_{selection.key}": best[selection.key], "best_epoch": best["epoch"]} if best else {}


def resume(
    training: Training, attached: Attached, checkpoint: Path, state: dict[str, Any], sampler: EpochSampler
) -> None:
    """Loads a checkpoint's ``state`` (`src.training.checkpoints.read_resumable`) into the run's objects
    (``attached.to_save``) and its last-checkpoint handler. A state saved inside an epoch goes on from there: the
    sampler skips the samples the epoch has already trained on, and the epoch's running loss is put back after the
    epoch restarts.

    Raises:
        ValueError: the checkpoint does not fit the model (`resume_from`).
    """
    missing = resume_from(state, attached.to_save, attached.last_checkpoint)
    trainer_state = training.trainer.state
    done = trainer_state.iteration % training.steps.epoch_length
    if done:  # inside an epoch
        sampler.start_at(done)
        if "train_loss" in state:  # put back after the epoch's start resets it
            loss_state = attached.to_save["train_loss"]
            resumed_epoch = trainer_state.iteration // training.steps.epoch_length + 1
            training.trainer.add_event_handler(
                Events.EPOCH_STARTED(once=resumed_epoch), lambda: loss_state.load_state_dict(state["train_loss"])
            )
    left = f" (not in the checkpoint, left fresh: {missing})" if missing else ""
    logger.info(
        "resumed from %s at epoch %d, iteration %d%s", checkpoint, trainer_state.epoch, trainer_state.iteration, left
    )


def train(training: Training, loader: DeviceLoader, epochs: int) -> None:
    """Runs the trainer to ``epochs`` epochs; a resumed run that has trained them all trains nothing (ignite
    would restart it from epoch 0)."""
    done = training.trainer.state.epoch
    if done >= epochs:
        logger.info(
            "the run has already trained %d epochs of --epochs %d: nothing to train (pass a larger --epochs to "
            "go on); writing its predictions and summary",
            done,
            epochs,
        )
        return
    training.trainer.run(loader, max_epochs=epochs, epoch_length=training.steps.epoch_length)


def save_valid_predictions(run_dir: Path, parts: Parts, training: Training, attached: Attached) -> Path:
    """Loads the best checkpoint (``attached.best_checkpoint``) into the model and writes its valid-fold
    probabilities to ``valid_predictions.csv`` (id, fold, labels, one column per class; `src.inference.oof`).
    Returns the checkpoint's path. With several processes each predicts its block of the valid rows, and rank 0
    writes them all in order."""
    loaders, data, fold_of = parts.loaders, parts.data, parts.fold_of
    best = Path(attached.best_checkpoint.last_checkpoint)  # ignite's path already holds the folder
    distributed.barrier()  # rank 0 has written it
    training.model.load_state_dict(torch.load(best, map_location=training.device, weights_only=True))
    logits = distributed.gather_rows(predict_logits(training.model, loaders.valid, training.device, parts.config.step))
    if not distributed.is_main():
        return best
    rows, ids = loaders.valid_rows, data.source.ids()
    frame = predictions_frame(
        [ids[i] for i in rows],
        to_probs(logits, data.task),
        data.task,
        folds=fold_of[rows],
        labels=data.source.table.iloc[rows],
    )
    write_predictions(frame, run_dir / rundir.PREDICTIONS)
    return best
