"""The training step on a GPU: a hand-written PyTorch loop against our ignite trainer on the same in-memory batches,
per mixed precision and memory format; images/s, their ratio and the peak GPU memory.

    python -m benchmarks.gpu_step [--arch effnet-b0] [--img-size 224] [--batch-size 256] [--iters 30] [--warmup 10]
        [--repeats 3] [--variants bf16-cl fp16-cl bf16] [--device cuda]

Both loops train the same model from the same weights with fused AdamW, on batches already on the device (so the
step alone is timed, not the loader), with the GPU synchronised only at the start and the end of the timed
iterations. The hand-written loop is the floor an engine adds to: autocast, the grad scaler for fp16, ``zero_grad``,
``backward``, ``step``. The trainer is `src.training.engine.create_trainer` with the per-iteration handlers of a real
run (the epoch's running loss on the device, the lr schedule, the NaN check every ``--log-every auto`` iterations).
Variants: ``bf16``/``fp16`` autocast, ``-cl`` the channels-last memory format. Each repeat runs every variant's two
loops back to back; the figures are medians over the repeats. On a CPU it runs too (tiny settings make it a smoke test).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from ignite.engine import Events

from src.config import LOG_EVERY, ModelConfig, OptimConfig, StepConfig
from src.losses import cross_entropy
from src.model import build_model
from src.training.engine import autocast_dtype, create_trainer
from src.training.handlers import attach_lr_scheduler, attach_terminate_on_nan, attach_training_metrics
from src.training.optim import build_lr_scheduler, build_optimizer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_loop(model, batches, amp: str, device: torch.device, iters: int) -> float:
    """Seconds for ``iters`` steps of the plain loop (after its warm-up batches, which the caller runs first)."""
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=1e-2))
    dtype = autocast_dtype(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    model.train()

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for x, y in batches[: len(batches) - iters]:  # warm-up: cuDNN's autotuning, allocator growth
        step(x, y)
    synchronize(device)
    start = time.perf_counter()
    for x, y in batches[len(batches) - iters :]:
        step(x, y)
    synchronize(device)
    return time.perf_counter() - start


def trainer_loop(model, batches, amp: str, device: torch.device, iters: int, channels_last: bool) -> float:
    """Seconds for the last ``iters`` iterations of our trainer over ``batches``."""
    optim = OptimConfig(lr=1e-3, weight_decay=1e-2, scheduler="onecycle")
    optimizer = build_optimizer(model, optim)
    step = StepConfig(amp=amp, channels_last=channels_last)
    trainer = create_trainer(model, optimizer, cross_entropy(0.1), device, step)
    attach_terminate_on_nan(trainer, LOG_EVERY.get(device.type, 1))
    attach_training_metrics(trainer, device)
    scheduler = build_lr_scheduler(optimizer, optim, total_steps=len(batches), warmup_steps=2)
    attach_lr_scheduler(trainer, trainer, scheduler, 1)
    times = {}
    start_at = len(batches) - iters

    def mark(engine):
        if engine.state.iteration == start_at:
            synchronize(device)
            times["start"] = time.perf_counter()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, mark)
    trainer.run(batches, max_epochs=1)
    synchronize(device)
    return time.perf_counter() - times["start"]


def batches_of(args: argparse.Namespace, device: torch.device, channels_last: bool) -> list:
    """``warmup + iters`` in-memory batches (N, 3, S, S) on the device: a few distinct ones, repeated."""
    g = torch.Generator().manual_seed(0)
    distinct = [
        (
            torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g),
            torch.randint(0, 10, (args.batch_size,), generator=g),
        )
        for _ in range(4)
    ]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    distinct = [(x.to(device).contiguous(memory_format=fmt), y.to(device)) for x, y in distinct]
    return [distinct[i % 4] for i in range(args.warmup + args.iters)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="effnet-b0")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["bf16-cl", "fp16-cl", "bf16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    torch.manual_seed(0)
    base = build_model(ModelConfig(arch=args.arch, in_chans=3), 10)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{args.arch}, {args.img_size} px, batch {args.batch_size}, {args.iters} timed iterations after "
        f"{args.warmup}, medians of {args.repeats} on {name}"
    )
    for variant in args.variants:
        amp, channels_last = variant.split("-")[0], variant.endswith("-cl")
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        batches = batches_of(args, device, channels_last)
        bare, ours, peaks = [], [], []
        for _ in range(args.repeats):
            model = copy.deepcopy(base).to(device, memory_format=fmt)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            images = args.iters * args.batch_size
            bare.append(images / hand_loop(model, batches, amp, device, args.iters))
            model = copy.deepcopy(base).to(device, memory_format=fmt)
            ours.append(images / trainer_loop(model, batches, amp, device, args.iters, channels_last))
            if device.type == "cuda":
                peaks.append(torch.cuda.max_memory_allocated(device) / 2**30)
        ratios = [o / b for o, b in zip(ours, bare)]
        peak = f"{max(peaks):.1f} GiB" if peaks else "n/a (cpu)"
        print(
            f"FIGURE step {variant:<8} bare {statistics.median(bare):8.0f} images/s  "
            f"trainer {statistics.median(ours):8.0f} images/s  trainer/bare {statistics.median(ratios):.3f} "
            f"({min(ratios):.3f}-{max(ratios):.3f})  peak memory {peak}"
        )


if __name__ == "__main__":
    main()
