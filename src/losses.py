"""Training criteria for each task kind, and a name registry.

- Cross entropy takes class indices (N,) int64 or soft targets (N, num_classes) float (mixup), with
  label smoothing (Szegedy et al. 2016, https://arxiv.org/abs/1512.00567) applied in both cases by
  `torch.nn.functional.cross_entropy` itself.
- Multi-label: binary cross entropy on logits (N, C) against multi-hot or mixed targets (N, C), with
  label smoothing pulling each target towards 0.5.
- Multi-head: the weighted mean of one cross entropy per head (Bengali.AI's 2:1:1 heads); the logits
  (N, sum of head sizes) are the heads' logits side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.targets import Task


def cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
    """Cross entropy on logits (N, num_classes) against indices (N,) or soft targets (N, num_classes).

    Args:
        label_smoothing: in [0, 1); mixes the targets with the uniform distribution.
    """
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


class SmoothBCEWithLogits(nn.Module):
    """BCE with logits (N, C) against targets in [0, 1] (N, C), mean over all entries; label smoothing
    maps a target t to t * (1 - s) + s / 2."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float() * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits, target)


class MultiHeadCrossEntropy(nn.Module):
    """Weighted mean over heads of each head's cross entropy: sum_h w_h CE_h / sum_h w_h.

    Args:
        sizes: classes per head; the logits (N, sum(sizes)) are split in this order.
        weights: weight per head.
        label_smoothing: applied within each head.

    Targets are int64 (N, heads) class indices or soft (N, sum(sizes)) (mixup, one block per head).
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.sizes = list(sizes)
        self.weights = list(weights or [1.0] * len(self.sizes))
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft = target.is_floating_point()
        targets = target.split(self.sizes, dim=1) if soft else target.unbind(dim=1)
        losses = [
            F.cross_entropy(head_logits, head_target, label_smoothing=self.label_smoothing)
            for head_logits, head_target in zip(logits.split(self.sizes, dim=1), targets)
        ]
        return sum(w * loss for w, loss in zip(self.weights, losses)) / sum(self.weights)


LOSSES = {"ce": cross_entropy, "bce": SmoothBCEWithLogits}


def build_criterion(name: str = "ce", label_smoothing: float = 0.0) -> nn.Module:
    """Builds a criterion by name.

    Raises:
        ValueError: unknown loss name; the message lists the known names.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name](label_smoothing=label_smoothing)


def task_criterion(task: Task, label_smoothing: float = 0.0) -> nn.Module:
    """The criterion a task trains with: CE (single), BCE (multilabel), weighted per-head CE (multihead)."""
    if task.kind == "multilabel":
        return SmoothBCEWithLogits(label_smoothing)
    if task.kind == "multihead":
        return MultiHeadCrossEntropy(task.sizes, task.weights, label_smoothing)
    return cross_entropy(label_smoothing)
