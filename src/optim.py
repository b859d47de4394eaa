"""Optimizers and learning-rate schedules, looked up by name; schedules are ignite param schedulers.

Step-wise schedules count optimizer steps (not micro-batches), so they are independent of
``accumulation_steps``. One-cycle: Smith & Topin 2017, https://arxiv.org/abs/1708.07120 (linear
variant, as in ignite's cifar10 example); cosine: Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983.
"""

from __future__ import annotations

import torch
from ignite.handlers import (
    CosineAnnealingScheduler,
    LRScheduler,
    ParamScheduler,
    PiecewiseLinear,
    ReduceLROnPlateauScheduler,
    create_lr_scheduler_with_warmup,
)
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Splits parameters into decayed weights and undecayed biases / normalisation weights (ndim <= 1)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS = {
    "adamw": lambda groups, lr: torch.optim.AdamW(groups, lr=lr),
    "adam": lambda groups, lr: torch.optim.Adam(groups, lr=lr),
    "sgd": lambda groups, lr: torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True),
}


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Builds the optimizer with no weight decay on biases and normalisation weights.

    Raises:
        ValueError: unknown optimizer name; the message lists the known names.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](param_groups(model, weight_decay), lr)


def build_lr_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    lr: float,
    total_steps: int,
    warmup_steps: int = 0,
) -> ParamScheduler | None:
    """Builds a step-wise schedule, or the plateau scheduler (to attach to the valid evaluator).

    Args:
        name: ``"onecycle"`` (linear warmup from lr/25 to lr, then linear decay to lr/1e4),
            ``"cosine"`` (linear warmup from lr/25 then cosine to lr/100), ``"plateau"`` (halve lr
            when the valid accuracy has not improved for 2 validations), ``"step"`` (linear warmup, then
            lr, divided by 10 at 50% and again at 75% of the steps; torch's `MultiStepLR`), or ``"none"``.
        optimizer: the optimizer whose ``lr`` is scheduled.
        lr: peak learning rate.
        total_steps: optimizer steps in the whole run.
        warmup_steps: optimizer steps of linear warmup.

    Returns:
        An ignite param scheduler with ``state_dict`` (for resuming), or None for ``"none"``.

    Raises:
        ValueError: unknown schedule name.
    """
    total_steps = max(total_steps, 2)
    warmup_steps = min(max(warmup_steps, 1), total_steps - 1)
    if name == "onecycle":
        return PiecewiseLinear(
            optimizer, "lr", milestones_values=[(0, lr / 25), (warmup_steps, lr), (total_steps, lr / 1e4)]
        )
    if name == "cosine":
        cosine = CosineAnnealingScheduler(
            optimizer, "lr", start_value=lr, end_value=lr / 100, cycle_size=max(total_steps - warmup_steps, 2)
        )
        if warmup_steps < 2:  # ignite's warmup needs at least 2 events
            return cosine
        return create_lr_scheduler_with_warmup(cosine, warmup_start_value=lr / 25, warmup_duration=warmup_steps)
    if name == "step":
        offset = warmup_steps if warmup_steps >= 2 else 0  # the wrapped schedule counts from the warmup's end
        milestones = sorted({max(int(f * total_steps) - offset, 1) for f in (0.5, 0.75)})
        step = LRScheduler(MultiStepLR(optimizer, milestones=milestones, gamma=0.1))
        if offset == 0:  # ignite's warmup needs at least 2 events
            return step
        return create_lr_scheduler_with_warmup(step, warmup_start_value=lr / 25, warmup_duration=warmup_steps)
    if name == "plateau":
        return ReduceLROnPlateauScheduler(optimizer, metric_name="accuracy", mode="max", factor=0.5, patience=2)
    if name == "none":
        return None
    raise ValueError(f"unknown scheduler {name!r}; known: onecycle, cosine, step, plateau, none")
