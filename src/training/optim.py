"""Optimizers and learning-rate schedules, looked up by name; schedules are ignite param schedulers.

Step-wise schedules count optimizer steps (not micro-batches), so they are independent of
``accumulation_steps``. One-cycle: Smith & Topin 2017, https://arxiv.org/abs/1708.07120 (linear
variant, as in ignite's cifar10 example); cosine: Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983.
"""

from __future__ import annotations

import typing

import torch
from ignite.handlers import (
    ConcatScheduler,
    CosineAnnealingScheduler,
    LRScheduler,
    ParamGroupScheduler,
    ParamScheduler,
    PiecewiseLinear,
    ReduceLROnPlateauScheduler,
    create_lr_scheduler_with_warmup,
)
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR

from src.config import OptimConfig, choices


@typing.runtime_checkable
class WithBackbone(typing.Protocol):
    """A model whose feature extractor is its ``backbone`` module (`src.model.Classifier`): what
    ``--backbone-lr-mult`` and ``--freeze-epochs`` act on."""

    backbone: nn.Module

def param_groups(model: nn.Module, weight_decay: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Splits parameters into decayed weights and undecayed biases / normalisation weights (ndim <= 1).

    With ``backbone_lr_mult != 1`` the parameters of ``model.backbone`` get their own two groups whose
    ``lr_mult`` key scales the learning rate (discriminative fine-tuning, Howard & Ruder 2018); every group
    carries ``lr_mult`` (1.0 for the head). Frozen parameters (``requires_grad=False``) are included: freezing
    is switched on and off during training (`set_backbone_trainable`).

    Raises:
        ValueError: ``backbone_lr_mult`` is not positive, or the model has no ``backbone`` to scale.
    """
    if backbone_lr_mult <= 0:
        raise ValueError(
            f"--backbone-lr-mult {backbone_lr_mult!r}: expected a positive float (1 = same lr as the head)"
        )
    backbone = set()
    if backbone_lr_mult != 1.0:
        if not isinstance(model, WithBackbone):
            raise ValueError(f"--backbone-lr-mult needs a model with a backbone; {type(model).__name__} has none")
        backbone = {id(p) for p in model.backbone.parameters()}
    groups = {(mult, decay): [] for mult in dict.fromkeys((1.0, backbone_lr_mult)) for decay in (True, False)}
    for param in model.parameters():
        mult = backbone_lr_mult if id(param) in backbone else 1.0
        groups[(mult, param.ndim > 1)].append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_mult": mult}
        for (mult, decay), params in groups.items()
        if params or mult == 1.0
    ]


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freezes (``requires_grad=False``) or unfreezes the parameters of ``model.backbone``.

    A frozen parameter gets no gradient, so the optimizer leaves it (and its moments) untouched; BatchNorm
    running statistics of the backbone still follow the data in train mode.

    Raises:
        ValueError: the model has no ``backbone`` module.
    """
    if not isinstance(model, WithBackbone):
        raise ValueError(f"--freeze-epochs needs a model with a backbone; {type(model).__name__} has none")
    model.backbone.requires_grad_(trainable)


OPTIMIZERS = {  # (param groups, lr, fused) -> optimizer; the keys are the names of src.config.choices.OPTIMIZERS
    "adamw": lambda groups, lr, fused: torch.optim.AdamW(groups, lr=lr, fused=fused or None),
    "adam": lambda groups, lr, fused: torch.optim.Adam(groups, lr=lr, fused=fused or None),
    "sgd": lambda groups, lr, fused: torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True),
}


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """Builds ``config.optimizer`` with ``config.weight_decay`` on weights only (not on biases and normalisation
    weights), and the backbone's learning rate ``config.lr * config.backbone_lr_mult`` (see `param_groups`).

    On CUDA, Adam and AdamW are torch's fused implementations: one kernel for all the parameters, and under the fp16
    grad scaler no wait for the GPU (the unfused step reads the scaler's inf check on the host, every step). On the
    CPU, torch's default (foreach) implementation, as before.

    Raises:
        ValueError: unknown optimizer name (the message lists the known names), or a bad multiplier.
    """
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; known: {sorted(OPTIMIZERS)}")
    groups = param_groups(model, config.weight_decay, config.backbone_lr_mult)
    for group in groups:
        group["lr"] = config.lr * group["lr_mult"]
    on_cuda = next(model.parameters()).device.type == "cuda"
    return OPTIMIZERS[config.optimizer](groups, config.lr, on_cuda)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    config: OptimConfig,
    total_steps: int,
    warmup_steps: int = 0,
    metric: str = "accuracy",
    higher_is_better: bool = True,
) -> ParamScheduler | None:
    """Builds a step-wise schedule, or the plateau scheduler (to attach to the valid evaluator).

    Args:
        optimizer: the optimizer whose ``lr`` is scheduled. A param group's ``lr_mult`` key (see
            `param_groups`) scales its curve: it peaks at ``lr * lr_mult``.
        config: ``scheduler``: ``"onecycle"`` (linear warmup from lr/25 to lr, then linear decay to lr/1e4),
            ``"cosine"`` (linear warmup from lr/25 then cosine to lr/100), ``"plateau"`` (halve lr when the
            valid metric has not improved for 2 validations), ``"step"`` (linear warmup, then lr, divided by 10
            at 50% and again at 75% of the steps; torch's `MultiStepLR`), or ``"none"``; ``lr``: the peak
            learning rate (of the groups with ``lr_mult`` 1).
        total_steps: optimizer steps in the whole run.
        warmup_steps: optimizer steps of linear warmup.
        metric, higher_is_better: the valid metric the plateau schedule watches, and its direction.

    Returns:
        An ignite param scheduler with ``state_dict`` (for resuming), or None for ``"none"``.

    Raises:
        ValueError: unknown schedule name.
    """
    name, lr = config.scheduler, config.lr
    total_steps = max(total_steps, 2)
    warmup_steps = min(max(warmup_steps, 1), total_steps - 1)
    if name in choices.ANNEALING_SCHEDULERS:
        mults = sorted({group.get("lr_mult", 1.0) for group in optimizer.param_groups})
        if len(mults) == 1:  # one schedule sets every group
            return _curve(name, optimizer, lr * mults[0], total_steps, warmup_steps)
        return ParamGroupScheduler(  # one schedule per group, each peaking at lr * its lr_mult
            [
                _curve(name, optimizer, lr * group.get("lr_mult", 1.0), total_steps, warmup_steps, index)
                for index, group in enumerate(optimizer.param_groups)
            ]
        )
    if name == "step":
        offset = warmup_steps if warmup_steps >= 2 else 0  # the wrapped schedule counts from the warmup's end
        milestones = sorted({max(int(f * total_steps) - offset, 1) for f in (0.5, 0.75)})
        decay = LRScheduler(MultiStepLR(optimizer, milestones=milestones, gamma=0.1))  # scales each group's own lr
        if offset == 0:  # ignite's warmup needs at least 2 events
            return decay
        return create_lr_scheduler_with_warmup(decay, warmup_start_value=lr / 25, warmup_duration=warmup_steps)
    if name == "plateau":  # torch's ReduceLROnPlateau scales each group's own lr
        mode = "max" if higher_is_better else "min"
        return ReduceLROnPlateauScheduler(optimizer, metric_name=metric, mode=mode, factor=0.5, patience=2)
    if name == "none":
        return None
    raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(choices.SCHEDULERS)}")


def _curve(
    name: str, optimizer, lr: float, total_steps: int, warmup_steps: int, index: int | None = None
) -> ParamScheduler:
    """The one-cycle or warmup + cosine curve peaking at ``lr``, for param group ``index`` (None: all groups)."""
    if name == "onecycle":
        return PiecewiseLinear(
            optimizer,
            "lr",
            milestones_values=[(0, lr / 25), (warmup_steps, lr), (total_steps, lr / 1e4)],
            param_group_index=index,
        )
    cosine = CosineAnnealingScheduler(
        optimizer,
        "lr",
        start_value=lr,
        end_value=lr / 100,
        cycle_size=max(total_steps - warmup_steps, 2),
        param_group_index=index,
    )
    if warmup_steps < 2:  # a warmup needs at least 2 events
        return cosine
    warmup = PiecewiseLinear(
        optimizer, "lr", milestones_values=[(0, lr / 25), (warmup_steps, lr)], param_group_index=index
    )
    return ConcatScheduler([warmup, cosine], durations=[warmup_steps])
