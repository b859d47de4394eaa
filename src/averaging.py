"""Weight averages: an exponential moving average of the weights (ignite's `EMAHandler`) and stochastic weight
averaging (torch's `AveragedModel`), each built and attached to the trainer.

- EMA: Polyak & Juditsky 1992; timm's ModelEma.
- SWA: Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and Better Generalization",
  https://arxiv.org/abs/1803.05407.
"""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch.optim.swa_utils import AveragedModel, update_bn

from src.engine import optimizer_step_filter, to_device


def build_ema(model: torch.nn.Module, decay: float, warmup_steps: int = 0) -> EMAHandler:
    """An exponential moving average of the weights, ignite's `EMAHandler`.

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
    """An equal-weight running average of the weights, torch's `AveragedModel` (its BatchNorm statistics are
    recomputed, see `attach_swa`)."""
    return AveragedModel(model)


def attach_swa(
    trainer: Engine,
    swa_model: AveragedModel,
    model: torch.nn.Module,
    start_epoch: int,
    bn_loader,
    device: torch.device,
) -> None:
    """From epoch ``start_epoch`` (1-based) on, at the end of every epoch: adds the weights to the average and
    recomputes its BatchNorm running statistics over ``bn_loader`` (torch's `update_bn`: one pass, no gradients).
    Attach the average's evaluation after this, with `from_epoch` (`src.handlers.attach_evaluation`).
    """

    def update(engine: Engine) -> None:
        swa_model.update_parameters(model)
        # update_bn runs the model in train mode: its dropout and drop-path draws must not move the global RNG,
        # or averaging would change the rest of the training run.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            # each input as a 1-tuple, moved here: update_bn keeps only the first item of a tuple, which would drop
            # the metadata of (images, metadata) inputs
            update_bn(((to_device(batch, device)[0],) for batch in bn_loader), swa_model)

    trainer.add_event_handler(from_epoch(start_epoch), update)


def from_epoch(start_epoch: int) -> Events:
    """The trainer's EPOCH_COMPLETED of epoch ``start_epoch`` (1-based) and every later one."""
    return Events.EPOCH_COMPLETED(event_filter=lambda engine, epoch: epoch >= start_epoch)
