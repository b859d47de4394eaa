"""Training criteria, looked up by name.

Cross entropy takes class indices (N,) int64 or soft targets (N, num_classes) float (mixup), with
label smoothing (Szegedy et al. 2016, https://arxiv.org/abs/1512.00567) applied in both cases by
`torch.nn.functional.cross_entropy` itself.
"""

from __future__ import annotations

from torch import nn


def cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
    """Cross entropy on logits (N, num_classes) against indices (N,) or soft targets (N, num_classes).

    Args:
        label_smoothing: in [0, 1); mixes the targets with the uniform distribution.
    """
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


LOSSES = {"ce": cross_entropy}


def build_criterion(name: str = "ce", label_smoothing: float = 0.0) -> nn.Module:
    """Builds the training criterion.

    Raises:
        ValueError: unknown loss name; the message lists the known names.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name](label_smoothing=label_smoothing)
