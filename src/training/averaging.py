"""Weight averages: an exponential moving average of the weights (ignite's `EMAHandler`) and stochastic weight
averaging (torch's `AveragedModel`), each built and attached to the trainer.

- EMA: Polyak & Juditsky 1992; timm's ModelEma.
- SWA: Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and Better Generalization",
  https://arxiv.org/abs/1803.05407.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch.optim.swa_utils import AveragedModel, update_bn

from src.training.engine import optimizer_step_filter, to_device


class ForeachEMAHandler(EMAHandler):
    """ignite's `EMAHandler` with its update done by torch's multi-tensor (``_foreach``) kernels: one launch for all
    the weights instead of two per tensor (effnet-b0: ~700 small kernels per optimizer step on a GPU, where each
    launch costs more than its work). The arithmetic is the library's, ``ema * (1 - m) + w * m`` in that order, so
    the average is bit for bit the same (tested); integer buffers are shared, as the library does."""

    def _update_ema_model(self, engine: Engine, name: str) -> None:  # overrides ignite 0.5's per-tensor loop
        momentum = getattr(engine.state, name)
        pairs = [(e, m.data) for e, m in zip(self.ema_model.parameters(), self.model.parameters())]
        if self.handle_buffers == "update":
            buffers = list(zip(self.ema_model.buffers(), self.model.buffers()))
            pairs += [(e, m.data) for e, m in buffers if e.is_floating_point()]
            for ema_b, model_b in buffers:
                if not ema_b.is_floating_point():  # BatchNorm's num_batches_tracked: the library shares it
                    ema_b.data = model_b.data
        elif self.handle_buffers == "copy":
            for ema_b, model_b in zip(self.ema_model.buffers(), self.model.buffers()):
                ema_b.data = model_b.data
        if pairs:
            ema, model = (list(t) for t in zip(*pairs))
            torch._foreach_mul_(ema, 1.0 - momentum)
            torch._foreach_add_(ema, model, alpha=momentum)


def build_ema(model: torch.nn.Module, decay: float, warmup_steps: int = 0) -> EMAHandler:
    """An exponential moving average of the weights, ignite's `EMAHandler` (updated by `ForeachEMAHandler`).

    After each optimizer step, ``ema = decay * ema + (1 - decay) * weights``; BatchNorm running statistics
    are averaged the same way (``handle_buffers="update"``). With ``warmup_steps`` the decay rises linearly
    from 0 (a plain copy) to ``decay`` over that many optimizer steps, so the average does not keep the
    random initial weights.

    Args:
        model: the trained model; the EMA copy (``handler.ema_model``, in eval mode) is made from it.
        decay: in (0, 1), per optimizer step; the average spans about ``1 / (1 - decay)`` optimizer steps.
        warmup_steps: optimizer steps of the decay warmup; 0 uses ``decay`` from the first optimizer step.

    Raises:
        ValueError: ``decay`` is not in (0, 1).
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"--ema {decay!r}: expected a decay in (0, 1), e.g. 0.999 (0 turns EMA off)")
    if warmup_steps > 1:
        return ForeachEMAHandler(
            model, momentum=1.0 - decay, momentum_warmup=1.0, warmup_iters=warmup_steps, handle_buffers="update"
        )
    return ForeachEMAHandler(model, momentum=1.0 - decay, handle_buffers="update")


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
    recomputed, see `attach_swa`), with every buffer on the model's device.

    `AveragedModel` makes its ``n_averaged`` counter on ``device`` (None: the CPU), not where the copied model is;
    the copy of a CUDA model would keep that one buffer on the CPU, and nccl refuses to broadcast it
    (`src.utils.distributed.sync_buffers`).
    """
    return AveragedModel(model, device=next(model.parameters()).device)


def attach_swa(
    trainer: Engine,
    swa_model: AveragedModel,
    model: torch.nn.Module,
    start_epoch: int,
    bn_loader: Iterable[Any],
    device: torch.device,
) -> None:
    """From epoch ``start_epoch`` (1-based) on, at the end of every epoch: adds the weights to the average and
    recomputes its BatchNorm running statistics over ``bn_loader`` (torch's `update_bn`: one pass, no gradients).
    Attach the average's evaluation after this, with `from_epoch` (`src.training.handlers.attach_evaluation`).
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
