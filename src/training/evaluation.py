"""Evaluation of a run: which evaluators exist, what they measure, when they run, which one selects.

One evaluator per (model, loader): ``train_eval`` (a fixed subset of the train fold, valid-time transforms) and
``valid`` with the trained model; ``valid_ema`` with the EMA weights (``--ema``) and ``valid_swa`` with the SWA
weights (``--swa-start-epoch``). The `Selection` says whose ``--metric`` picks the best checkpoint and drives
early stopping and the plateau schedule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.metrics import Metric

from src.config import Config
from src.metrics import get_metric, ignite_metric
from src.targets import Task
from src.training.engine import create_evaluator, make_metrics, validation_filter


@dataclasses.dataclass(frozen=True)
class Selection:
    """The validation that selects: evaluator ``name`` and its ``metric``, whose direction is ``higher_is_better``.

    The EMA model's evaluator selects with ``--ema`` (the weights one would submit), else the trained model's.
    """

    name: str
    metric: str
    higher_is_better: bool

    @classmethod
    def of(cls, config: Config) -> Selection:
        metric = config.eval.metric
        return cls("valid_ema" if config.regularisation.ema else "valid", metric, get_metric(metric).higher_is_better)

    @property
    def key(self) -> str:
        """``<evaluator>_<metric>``: the history column and the best checkpoints' score name."""
        return f"{self.name}_{self.metric}"

    def score_function(self) -> Callable[[Engine], float]:
        """The evaluator's metric, signed so that higher is better (for `Checkpoint` and `EarlyStopping`)."""
        return Checkpoint.get_default_score_fn(self.metric, 1.0 if self.higher_is_better else -1.0)


def compiled(model: torch.nn.Module, config: Config) -> torch.nn.Module:
    """``--compile``: the training model compiled once per input shape (``dynamic=False``), else the model itself.
    The compiled module shares the model's parameters: optimizer, checkpoints and weight averages keep using the
    plain model, and the evaluators run it eagerly.

    Why only training: TorchDynamo guards each compiled graph on the module, its train/eval mode and the input
    shapes, so compiled evaluators recompile for each of them (the trained model in eval mode, the EMA and SWA
    copies, the ragged last batch of every evaluation loader, every size of a progressive schedule) until the
    recompile limit, after which they silently run eagerly anyway. The training step sees one shape per image size
    (its loader drops the ragged last batch) and holds most of the compute. Each recompilation is logged
    (``torch._logging``'s ``recompiles``, with its reason).
    """
    if not config.step.compile:
        return model
    torch._logging.set_logs(recompiles=True)
    return torch.compile(model, dynamic=False)


def evaluator_metrics(config: Config, task: Task, device: torch.device | str = "cpu") -> dict[str, Metric]:
    """The task's standard metrics (`src.training.engine.make_metrics`) plus the competition ``--metric``, kept on
    ``device`` until computed."""
    metrics = make_metrics(task, device)
    if config.eval.metric not in metrics:
        metrics[config.eval.metric] = ignite_metric(config.eval.metric, task, config.eval.threshold, device)
    return metrics


def setup_evaluators(
    config: Config, models: dict[str, torch.nn.Module], task: Task, device: torch.device
) -> dict[str, Engine]:
    """One evaluator per named model (see the module doc), in the given order, with the same metrics."""
    return {
        name: create_evaluator(model, evaluator_metrics(config, task, device), device, config.step)
        for name, model in models.items()
    }


def validation_event(config: Config, epoch_length: int) -> Events:
    """When the evaluators run: after every epoch, or with ``--val-every`` also inside epochs (see
    `src.training.engine.validation_filter`)."""
    if config.eval.val_every is None:
        return Events.EPOCH_COMPLETED
    return Events.ITERATION_COMPLETED(
        event_filter=validation_filter(config.eval.val_every, epoch_length, config.step.accumulation_steps)
    )
