"""Competition metrics, looked up by name (``--metric``): on probabilities for OOF files and ensembles, and as
ignite metrics over a whole validation pass for the evaluators.

Every metric takes probabilities (see `to_probs`) and targets as `src.targets.Task.encode` returns them:

- ``accuracy``: single; multilabel (exact match of the tags at ``threshold``); multihead (weighted by head).
- ``top<k>`` (``top3``): single; the true class among the k most likely (scikit-learn `top_k_accuracy_score`).
- ``map@<k>`` (``map@3``): single; mean average precision at k with one true class, 1 / rank if rank <= k,
  else 0 (the Quick, Draw! competition's metric; ours, no library has it).
- ``macro_recall``: single; multihead: the weighted mean of the heads' (the Bengali.AI metric with 2:1:1
  heads); scikit-learn `recall_score`.
- ``f<beta>`` (``f2``): multilabel, tags at ``threshold``, averaged per sample (Planet: F2); scikit-learn
  `fbeta_score`.
- ``roc_auc``: single (binary: the second class; else one-vs-rest macro), multilabel (macro); scikit-learn.
- ``qwk``: single, classes in order; quadratic weighted kappa, scikit-learn `cohen_kappa_score`.
- ``log_loss``: single, lower is better; scikit-learn `log_loss`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
import torch
from ignite.metrics import EpochMetric
from sklearn.metrics import (
    cohen_kappa_score,
    fbeta_score,
    log_loss,
    recall_score,
    roc_auc_score,
    top_k_accuracy_score,
)

from src.targets import Task
from src.utils import distributed


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A named metric: ``fn(probs, targets, task, threshold) -> float``, its direction and the task kinds it takes."""

    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    kinds: tuple[str, ...]


def to_probs(logits: torch.Tensor | np.ndarray, task: Task) -> np.ndarray:
    """Logits (N, num_outputs) -> float64 probabilities: softmax (single), sigmoid per tag (multilabel), softmax
    per head (multihead; the heads side by side as in the logits)."""
    logits = torch.as_tensor(logits, dtype=torch.float64, device="cpu")
    if task.kind == "multilabel":
        return torch.sigmoid(logits).numpy()
    if task.kind == "multihead":
        return torch.cat([part.softmax(dim=1) for part in logits.split(task.sizes, dim=1)], dim=1).numpy()
    return logits.softmax(dim=1).numpy()


def _heads(probs: np.ndarray, task: Task) -> list[np.ndarray]:
    return np.split(probs, np.cumsum(task.sizes)[:-1], axis=1)


def _accuracy(probs, targets, task, threshold):
    if task.kind == "multilabel":
        return float(((probs > threshold) == (targets > 0.5)).all(axis=1).mean())
    if task.kind == "multihead":
        accs = [(p.argmax(1) == targets[:, h]).mean() for h, p in enumerate(_heads(probs, task))]
        return float(np.average(accs, weights=task.weights))
    return float((probs.argmax(1) == targets).mean())


def _map_at(k: int):
    def fn(probs, targets, task, threshold):
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k) most likely first
        hits = top == targets[:, None]
        rank = hits.argmax(axis=1) + 1
        return float(np.where(hits.any(axis=1), 1.0 / rank, 0.0).mean())

    return fn


def _top(k: int):
    def fn(probs, targets, task, threshold):
        return float(top_k_accuracy_score(targets, probs, k=k, labels=range(probs.shape[1])))

    return fn


def _macro_recall(probs, targets, task, threshold):
    if task.kind == "multihead":  # Bengali.AI: the heads' macro recalls, weighted 2:1:1
        recalls = [
            recall_score(targets[:, h], p.argmax(1), average="macro", labels=range(p.shape[1]), zero_division=0)
            for h, p in enumerate(_heads(probs, task))
        ]
        return float(np.average(recalls, weights=task.weights))
    present = np.unique(targets)  # recall is undefined for a class without true rows
    return float(recall_score(targets, probs.argmax(1), average="macro", labels=present, zero_division=0))


def _fbeta(beta: float):
    def fn(probs, targets, task, threshold):
        return float(fbeta_score(targets > 0.5, probs > threshold, beta=beta, average="samples", zero_division=0))

    return fn


def _roc_auc(probs, targets, task, threshold):
    if task.kind == "multilabel":
        return float(roc_auc_score(targets > 0.5, probs, average="macro"))
    if probs.shape[1] == 2:
        return float(roc_auc_score(targets, probs[:, 1]))
    return float(roc_auc_score(targets, probs, multi_class="ovr", average="macro", labels=range(probs.shape[1])))


def _qwk(probs, targets, task, threshold):
    return float(cohen_kappa_score(targets, probs.argmax(1), weights="quadratic"))


def _log_loss(probs, targets, task, threshold):
    return float(log_loss(targets, np.clip(probs, 1e-15, 1.0), labels=range(probs.shape[1])))


_FIXED = {
    "accuracy": MetricSpec("accuracy", _accuracy, True, ("single", "multilabel", "multihead")),
    "macro_recall": MetricSpec("macro_recall", _macro_recall, True, ("single", "multihead")),
    "roc_auc": MetricSpec("roc_auc", _roc_auc, True, ("single", "multilabel")),
    "qwk": MetricSpec("qwk", _qwk, True, ("single",)),
    "log_loss": MetricSpec("log_loss", _log_loss, False, ("single",)),
}
_PATTERNS = {  # name pattern -> spec factory of its number
    r"map@(\d+)": lambda k: MetricSpec(f"map@{k}", _map_at(int(k)), True, ("single",)),
    r"top(\d+)": lambda k: MetricSpec(f"top{k}", _top(int(k)), True, ("single",)),
    r"f(\d+(?:\.\d+)?)": lambda beta: MetricSpec(f"f{beta}", _fbeta(float(beta)), True, ("multilabel",)),
}
METRIC_NAMES = (*_FIXED, "map@<k>", "top<k>", "f<beta>")


def get_metric(name: str, task: Task | None = None) -> MetricSpec:
    """The metric called ``name`` (see the module table), checked against the task kind.

    Raises:
        ValueError: an unknown name (the message lists the known ones), or a metric the task kind cannot use.
    """
    spec = _FIXED.get(name)
    for pattern, factory in _PATTERNS.items():
        match = re.fullmatch(pattern, name)
        if spec is None and match:
            spec = factory(match.group(1))
    if spec is None:
        raise ValueError(f"--metric {name!r}: unknown metric; known: {', '.join(METRIC_NAMES)}")
    if task is not None and task.kind not in spec.kinds:
        raise ValueError(f"--metric {name}: not defined for a {task.kind} task; it takes {', '.join(spec.kinds)}")
    return spec


def tune_thresholds(
    probs: np.ndarray, targets: np.ndarray, task: Task, metric: str, grid: np.ndarray | None = None, rounds: int = 2
) -> np.ndarray:
    """Per-tag thresholds (C,) that maximise a multi-label ``metric`` (e.g. ``f2``) on OOF predictions, by
    coordinate ascent over ``grid`` (0.05 ... 0.95) starting from 0.5 everywhere (the Planet recipe).

    Raises:
        ValueError: the metric is not a multi-label one.
    """
    spec = get_metric(metric, task)
    if task.kind != "multilabel":
        raise ValueError(f"threshold tuning is for multi-label tasks, not {task.kind}")
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2) if grid is None else grid
    thresholds = np.full(probs.shape[1], 0.5)
    for _ in range(rounds):
        for c in range(probs.shape[1]):
            values = []
            for t in grid:
                thresholds[c] = t
                values.append(spec.fn(probs, targets, task, thresholds))
            thresholds[c] = grid[int(np.argmax(values))]  # the first best on ties
    return thresholds


def score(name: str, probs: np.ndarray, targets: np.ndarray, task: Task, threshold: float = 0.5) -> float:
    """``name``'s value of probabilities (N, num_outputs) against targets (see `get_metric`)."""
    return get_metric(name, task).fn(np.asarray(probs, np.float64), np.asarray(targets), task, threshold)


def ignite_metric(name: str, task: Task, threshold: float = 0.5, device: torch.device | str = "cpu") -> EpochMetric:
    """An ignite metric computing ``name`` over a whole evaluation pass of (logits, targets) outputs, kept on
    ``device`` until then; with several processes, over every process's rows (`GatheredEpochMetric`)."""
    spec = get_metric(name, task)

    def compute(y_pred: torch.Tensor, y: torch.Tensor) -> float:
        return spec.fn(to_probs(y_pred, task), y.cpu().numpy(), task, threshold)

    return GatheredEpochMetric(compute, check_compute_fn=False, device=device)


class GatheredEpochMetric(EpochMetric):
    """ignite's `EpochMetric`, computed on the predictions of every process however many each has
    (`src.utils.distributed.gather_rows`; ignite's gathers equal shapes only, i.e. a padded evaluation)."""

    def compute(self) -> float:
        if distributed.world_size() == 1:
            return super().compute()
        if self._result is None:
            predictions = distributed.gather_rows(torch.cat(self._predictions))
            targets = distributed.gather_rows(torch.cat(self._targets))
            self._result = self.compute_fn(predictions, targets)  # the same rows, the same value, in every process
        return self._result
