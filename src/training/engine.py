"""The ignite engines: one trainer (mixup, AMP, gradient accumulation and clipping) and plain evaluators."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Loss, Metric, MetricsLambda
from torch import nn

from src.config import StepConfig
from src.losses import MultiHeadLoss, SmoothBCEWithLogits
from src.targets import Task


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device``, or None when AMP is off.

    fp16 needs CUDA (and a grad scaler); bf16 runs on CUDA and CPU; 'auto' is bf16 on a GPU that supports it
    (Ampere and later: no grad scaler, the range of fp32), fp16 on older GPUs, and off on the CPU (whose bf16
    kernels are slower than fp32 on most CPUs).
    """
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16" and device.type == "cuda":
        return torch.float16
    return None


def optimizer_step_filter(accumulation_steps: int) -> Callable[[Engine, int], bool]:
    """Event filter true on the iteration that ends an accumulation window (an optimizer step)."""
    return lambda engine, iteration: iteration % accumulation_steps == 0


def window_start_filter(accumulation_steps: int) -> Callable[[Engine, int], bool]:
    """Event filter true on the first micro-batch of an accumulation window (to set the lr before it)."""
    return lambda engine, iteration: (iteration - 1) % accumulation_steps == 0


def validation_filter(
    val_every: float, epoch_length: int, accumulation_steps: int = 1
) -> Callable[[Engine, int], bool]:
    """Event filter (on ITERATION_COMPLETED) of the iterations after which to validate: ``--val-every``.

    Args:
        val_every: a fraction of an epoch in (0, 1) (e.g. 0.25: four times per epoch), or a whole number of
            optimizer steps >= 1 (e.g. 500), counted over the whole run.
        epoch_length: iterations (micro-batches) per epoch.
        accumulation_steps: micro-batches per optimizer step; validation happens only after an optimizer
            step (the last micro-batch of a window), never in the middle of an accumulation window.

    Returns:
        ``filter(engine, iteration) -> bool``, also true on the last iteration of every epoch.

    Raises:
        ValueError: ``val_every`` is not positive, or >= 1 but not a whole number.
    """
    if val_every <= 0 or (val_every >= 1 and val_every != int(val_every)):
        raise ValueError(
            f"--val-every {val_every!r}: expected a fraction of an epoch in (0, 1) or a whole number of optimizer steps"
        )
    if val_every >= 1:
        interval = int(val_every) * accumulation_steps

        def every_steps(engine: Engine, iteration: int) -> bool:
            return iteration % interval == 0 or iteration % epoch_length == 0

        return every_steps
    # A fraction: thresholds at multiples of `interval` iterations into the epoch; validate after the first
    # optimizer step that reaches each threshold (windows may straddle epoch ends).
    interval = max(round(val_every * epoch_length / accumulation_steps), 1) * accumulation_steps

    def fraction(engine: Engine, iteration: int) -> bool:
        in_epoch = (iteration - 1) % epoch_length + 1
        if in_epoch == epoch_length:
            return True
        if iteration % accumulation_steps:
            return False
        return in_epoch // interval > max(in_epoch - accumulation_steps, 0) // interval

    return fraction


def to_device(
    batch: Sequence[Any], device: torch.device, channels_last: bool = False
) -> tuple[torch.Tensor | tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Moves an (x, y) batch to ``device``: x images (N, C, H, W), optionally in channels-last memory format, or
    ``(images, metadata (N, width))`` (`src.data.metadata`)."""
    x, y = batch
    if isinstance(x, (tuple, list)):
        images, meta = to_device((x[0], y), device, channels_last)[0], x[1].to(device, non_blocking=True)
        return (images, meta), y.to(device, non_blocking=True)
    memory_format = torch.channels_last if channels_last and x.ndim == 4 else torch.preserve_format
    return x.to(device, non_blocking=True, memory_format=memory_format), y.to(device, non_blocking=True)


class FeatureLoss(NamedTuple):
    """A loss on the pooled embeddings added to the criterion (the center loss, `src.losses.CenterLoss`), and the
    optimizer of its own parameters, stepped with the model's."""

    loss: nn.Module
    optimizer: torch.optim.Optimizer


def create_trainer(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    step: StepConfig | None = None,
    mixup: Callable | None = None,
    feature_loss: FeatureLoss | None = None,
) -> Engine:
    """Builds the training engine.

    Each iteration is one micro-batch whose loss is divided by ``step.accumulation_steps`` before backward: a
    window of micro-batches gives the update of one batch that many times larger (exactly so without BatchNorm).
    The optimizer steps every ``accumulation_steps`` iterations, counted over the run (a window may span epochs).

    Args:
        model: maps (N, C, H, W) float to logits (N, num_classes).
        optimizer: the optimizer.
        criterion: loss of (logits, targets); targets are (N,) int64 or soft (N, num_classes) with mixup.
        device: where to train.
        step: accumulation, clipping (global L2 norm, after unscaling), AMP (``fp16`` on CUDA with a grad scaler,
            ``bf16``), channels-last inputs; None: the CLI defaults (fp32, channels-last).
        mixup: optional callable (x, y) -> (mixed x, soft targets (N, num_classes)).
        feature_loss: optional loss of (embeddings (N, num_features), targets) added to the criterion; the model
            must then return ``(logits, embeddings)`` when called with ``return_features=True``.

    Returns:
        An `Engine` whose step returns ``{"loss": tensor}``, the un-divided loss of the micro-batch, left on the
        device (reading it waits for the step). Its grad scaler is ``trainer.state.scaler`` (ignite's
        `create_supervised_trainer` convention), enabled for fp16 on CUDA. A DistributedDataParallel model
        synchronises its gradients only on the last micro-batch of each window (``no_sync``).
    """
    step = step or StepConfig()
    dtype = autocast_dtype(step.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 needs loss scaling
    optimizers = [optimizer] if feature_loss is None else [optimizer, feature_loss.optimizer]

    no_sync = getattr(model, "no_sync", None)  # DistributedDataParallel

    def train_step(engine: Engine, batch) -> dict[str, torch.Tensor]:
        model.train()
        x, y = to_device(batch, device, step.channels_last)  # (N, C, H, W), (N,)
        if mixup is not None:
            x, y = mixup(x, y)  # y: (N, num_classes) soft targets
        window_ends = engine.state.iteration % step.accumulation_steps == 0
        with contextlib.nullcontext() if window_ends or no_sync is None else no_sync():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                if feature_loss is None:
                    loss = criterion(model(x), y)  # logits (N, num_classes)
                else:
                    y_pred, features = model(x, return_features=True)  # (N, num_classes), (N, num_features)
                    loss = criterion(y_pred, y) + feature_loss.loss(features, y)
            scaler.scale(loss / step.accumulation_steps).backward()
        if window_ends:
            _step_optimizers(model, optimizers, scaler, step.clip_grad_norm)
        return {"loss": loss.detach()}

    trainer = Engine(train_step)
    trainer.state.scaler = scaler
    return trainer


def _step_optimizers(
    model: nn.Module, optimizers: list[torch.optim.Optimizer], scaler: torch.amp.GradScaler, clip: float | None
) -> None:
    """Clips the model's gradients (after unscaling) to global L2 norm ``clip``, steps the optimizers through the
    grad scaler, and zeroes the gradients."""
    if clip is not None:
        scaler.unscale_(optimizers[0])
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)


def make_metrics(task: Task | None = None, device: torch.device | str = "cpu") -> dict[str, Metric]:
    """Fresh metrics for one evaluator, summed on ``device`` (the model's: summing on the CPU would copy each
    batch's counts there, a wait for the GPU per batch); ``accuracy`` selects the best checkpoint for every task kind.

    - single (or None): ``accuracy`` and the plain (unsmoothed) cross-entropy ``loss``.
    - multilabel: ``accuracy`` is the exact-match rate of the tags at probability 0.5, ``label_accuracy``
      the fraction of correct (row, tag) decisions, ``loss`` the BCE.
    - multihead: ``accuracy_<column>`` per head, ``accuracy`` their weighted mean (the task's head
      weights), ``loss`` the weighted per-head cross entropy.
    """
    if task is None or task.kind == "single":
        return {"accuracy": Accuracy(device=device), "loss": Loss(nn.CrossEntropyLoss(), device=device)}
    if task.kind == "multilabel":

        def tags(output):
            y_pred, y = output
            return (y_pred > 0).long(), y.long()  # logit > 0 <=> probability > 0.5

        def flat_tags(output):
            y_pred, y = tags(output)
            return y_pred.flatten(), y.flatten()

        return {
            "accuracy": Accuracy(output_transform=tags, is_multilabel=True, device=device),
            "label_accuracy": Accuracy(output_transform=flat_tags, device=device),
            "loss": Loss(SmoothBCEWithLogits(), device=device),
        }
    metrics: dict[str, Metric] = {"loss": Loss(MultiHeadLoss(task.sizes, task.weights), device=device)}
    offsets = [0, *itertools.accumulate(task.sizes)]
    for h, head in enumerate(task.heads):
        metrics[f"accuracy_{head.column}"] = Accuracy(
            output_transform=lambda out, h=h: (out[0][:, offsets[h] : offsets[h + 1]], out[1][:, h]), device=device
        )
    per_head = [metrics[f"accuracy_{head.column}"] for head in task.heads]
    total = sum(task.weights)
    metrics["accuracy"] = MetricsLambda(lambda *accs: sum(w * a for w, a in zip(task.weights, accs)) / total, *per_head)
    return metrics


def create_evaluator(
    model: nn.Module, metrics: dict[str, Metric], device: torch.device, step: StepConfig | None = None
) -> Engine:
    """Builds an evaluation engine: ``model.eval()``, no gradients, un-mixed data, ``step``'s AMP and memory format.

    Its step returns ``(y_pred (N, num_classes) float32 logits, y (N,) int64)``; the metrics are
    computed over the whole loader and land in ``evaluator.state.metrics``.
    """
    step = step or StepConfig()
    dtype = autocast_dtype(step.amp, device)

    @torch.no_grad()
    def eval_step(engine: Engine, batch) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        x, y = to_device(batch, device, step.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            y_pred = model(x)
        return y_pred.float(), y

    evaluator = Engine(eval_step)
    for name, metric in metrics.items():
        metric.attach(evaluator, name)
    return evaluator


def predict_logits(
    model: nn.Module, loader: Iterable[Any], device: torch.device, step: StepConfig | None = None
) -> torch.Tensor:
    """Runs ``model`` in eval mode over ``loader`` (batches of (x, y); y is ignored) through an evaluator.

    Returns:
        float32 logits (N, num_outputs) on the CPU, in the loader's order.
    """
    evaluator = create_evaluator(model, {}, device, step)
    outputs: list[torch.Tensor] = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(to_host(e.state.output[0])))
    evaluator.run(loader)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the copies to the host have landed
    return torch.cat(outputs) if outputs else torch.empty(0)


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` on the CPU; from a GPU into pinned memory without waiting for it (the caller
    synchronises before reading), where ``.cpu()`` would wait for the device on every batch."""
    if not tensor.is_cuda:
        return tensor.cpu()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor, non_blocking=True)
