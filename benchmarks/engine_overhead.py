"""Training speed: a hand-written PyTorch loop vs our ignite trainer, and the loader's share.

    python -m benchmarks.engine_overhead [--arch effnet-b0] [--iters 30] [--batch-size 64] [--img-size 32]
        [--repeats 5] [--num-workers N]

Prints images/s for: (1) a hand-written loop on in-memory tensors, (2) our trainer with its
per-iteration handlers (NaN check, epoch loss, schedule, progress-bar-free) on the same tensors,
(3) the train loader alone (decode + augment) with ``--batch-aug`` (the default), (4) our trainer fed by that
loader, (3') and (4') the same with the light preset per image in albumentations (``--no-batch-aug``); medians
over the repeats, and the ratios (2)/(1), (4)/(2) and (4')/(2) taken within each repeat (the variants run back to
back, so the machine's drift cancels). Every variant trains the same model from the same initial weights on the
bundled digits.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F
from ignite.engine import Events

from src.config import LoaderConfig, ModelConfig, OptimConfig, StepConfig
from src.data.folds import assign_folds, split_indices
from src.loaddata import build_loaders, default_num_workers, load_digits
from src.losses import cross_entropy
from src.model import build_model
from src.training.engine import create_trainer
from src.training.handlers import attach_lr_scheduler, attach_terminate_on_nan, attach_training_metrics
from src.training.optim import build_lr_scheduler, build_optimizer

CPU = torch.device("cpu")


def hand_loop(model, batches, lr):
    optimizer = build_optimizer(model, OptimConfig(lr=lr, weight_decay=1e-2))
    model.train()
    start = time.perf_counter()
    for x, y in batches:
        x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        loss.item()
    return time.perf_counter() - start


def ignite_loop(model, data, lr, epoch_length):
    optim = OptimConfig(lr=lr, weight_decay=1e-2, scheduler="onecycle")
    optimizer = build_optimizer(model, optim)
    trainer = create_trainer(model, optimizer, cross_entropy(0.1), CPU, StepConfig(channels_last=True))
    attach_terminate_on_nan(trainer)
    attach_training_metrics(trainer)
    scheduler = build_lr_scheduler(optimizer, optim, total_steps=epoch_length, warmup_steps=2)
    attach_lr_scheduler(trainer, trainer, scheduler, 1)
    times = {}
    trainer.add_event_handler(Events.STARTED, lambda e: times.setdefault("start", time.perf_counter()))
    trainer.add_event_handler(Events.COMPLETED, lambda e: times.setdefault("end", time.perf_counter()))
    trainer.run(data, max_epochs=1, epoch_length=epoch_length)
    return times["end"] - times["start"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="effnet-b0")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--num-workers", type=int, default=None, help="loader workers; default: the trainer's (0 on CPU)"
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    data = load_digits()
    train_idx, valid_idx = split_indices(assign_folds(data, 5, seed=42), 0, seed=42)
    workers = default_num_workers(CPU) if args.num_workers is None else args.num_workers
    loader = LoaderConfig(img_size=args.img_size, batch_size=args.batch_size, aug="light", num_workers=workers)
    loaders = build_loaders(data, (train_idx, valid_idx), dataclasses.replace(loader, batch_aug=True), seed=42)
    per_image = build_loaders(data, (train_idx, valid_idx), dataclasses.replace(loader, batch_aug=False), seed=42).train
    iters = min(args.iters, len(loaders.train))
    batches = [b for b, _ in zip(loaders.train, range(iters))]  # the same decoded, augmented batches in memory
    images = iters * args.batch_size
    base = build_model(ModelConfig(arch=args.arch, in_chans=1), 10).to(memory_format=torch.channels_last)
    hand_loop(copy.deepcopy(base), batches[:3], 1e-3)  # warm-up

    results: dict[str, list[float]] = {
        "hand_loop": [], "ignite_in_memory": [], "loader_only": [], "ignite_loader": [],
        "per_image_loader_only": [], "ignite_per_image_loader": [],
    }
    for _ in range(args.repeats):
        results["hand_loop"].append(images / hand_loop(copy.deepcopy(base), batches, 1e-3))
        results["ignite_in_memory"].append(images / ignite_loop(copy.deepcopy(base), batches, 1e-3, iters))
        for name, train in (("", loaders.train), ("per_image_", per_image)):
            start = time.perf_counter()
            for _, _ in zip(train, range(iters)):
                pass
            results[f"{name}loader_only"].append(images / (time.perf_counter() - start))
            results[f"ignite_{name}loader"].append(images / ignite_loop(copy.deepcopy(base), train, 1e-3, iters))
    print(
        f"{args.arch} {args.img_size}px batch {args.batch_size}, {iters} iterations x {args.repeats} repeats, "
        f"{torch.get_num_threads()} threads"
    )
    for name, values in results.items():
        print(f"{name:>18}: {statistics.median(values):8.1f} images/s median (all: {[round(v, 1) for v in values]})")
    # Ratios within each repeat (the variants run back to back), so that the machine's drift cancels out.
    for label, num, den in (
        ("trainer / hand loop", "ignite_in_memory", "hand_loop"),
        ("loader / in memory", "ignite_loader", "ignite_in_memory"),
        ("per-image loader / in memory", "ignite_per_image_loader", "ignite_in_memory"),
    ):
        ratios = [a / b for a, b in zip(results[num], results[den])]
        print(f"{label:>28}: median {statistics.median(ratios):.3f} (all: {[round(r, 3) for r in ratios]})")


if __name__ == "__main__":
    main()
