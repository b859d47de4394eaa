"""The loader on a photo competition: images per second per worker core, ours against timm's train pipeline on the
same files, the decode-only bound, and the rate delivered on the model's device with several workers.

    python -m benchmarks.loader_speed --train-csv data/photos/train.csv --image-dir data/photos/train \\
        --img-size 224 --workers 1 --compare timm [--images 1536] [--repeats 3] [--aug light] [--device cpu]

Each variant is a torch DataLoader with ``--workers`` worker processes over the same first ``--images`` rows, in
batches of ``--batch-size``; the clock starts at the first batch (the workers' start is left out) and each repeat
runs the variants one after the other, alternating, so a machine's drift falls on all of them. Per core is the
rate divided by the workers.

- ``ours``: `src.loaddata.build_loaders`' train loader as training builds it (``--aug``; the default ``light``
  preset in its batch pipeline): decode (OpenCV, reduced-scale JPEG decode where the file is at least twice the
  size), resize, the draws of the augmentation, collate, uint8 pixels out; the warp and the normalisation run on
  the model's device after that (`src.data.batch_augment.DeviceStage`), so they are not on these cores.
- ``timm``: timm's ``create_transform(img_size, is_training=True)`` (RandomResizedCrop, flip, colour jitter,
  ToTensor, Normalize, in PIL and torch on the CPU) on ``PIL.Image.open(path).convert("RGB")``, as timm's
  ImageDataset reads; ``timm-prefetcher``: the same with ``use_prefetcher=True`` (uint8 out, normalised on the GPU
  by timm's PrefetchLoader), the like-for-like comparison with ours.
- ``decode``: the files decoded by our reader and nothing else.
- ``ours on <device>``: with ``--device cuda``, ours through `src.data.prefetch.DeviceLoader`, the batches made images
  on the GPU; the rate the model is fed at.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.config import Config, LoaderConfig
from src.loaddata import build_loaders, load_data
from src.training.assembly import reading


class Decode(Dataset):
    """Row i's image decoded by our reader; only its shape goes on (no collate of different sizes)."""

    def __init__(self, images, rows: int):
        self.images, self.rows = images, rows

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.tensor(self.images[i].shape), 0


class TimmStyle(Dataset):
    """timm's reading: the file opened by Pillow as RGB, then ``transform``; the label as an int."""

    def __init__(self, paths: list[str], labels: np.ndarray, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            x = self.transform(image.convert("RGB"))
        return (torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x), int(self.labels[i])


def rate(make: Callable[[], object], device: torch.device | None = None) -> float:
    """Images per second of one pass over a fresh loader, from its first batch on."""
    loader = make()
    count, start = 0, None
    for x, _ in loader:
        if start is None:
            start = time.perf_counter()
            continue
        count += len(x) if not isinstance(x, tuple) else len(x[0])
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return count / seconds


def variants(args: argparse.Namespace) -> dict[str, tuple[Callable[[], object], torch.device | None]]:
    """The loaders to time, each a factory of a fresh one."""
    config = Config.of(
        train_csv=args.train_csv,
        image_dir=args.image_dir,
        image_template=args.image_template,
        img_size=args.img_size,
        verify_images=False,
    )
    data = load_data(config.data, reading(config))
    rows = np.arange(min(args.images, len(data)))
    loader_config = LoaderConfig(
        img_size=args.img_size, batch_size=args.batch_size, aug=args.aug, num_workers=args.workers,
        train_eval_size=args.batch_size, mean=(0.5,) * data.in_chans, std=(0.25,) * data.in_chans,
    )
    device = torch.device(args.device)

    def ours(on: torch.device | str = "cpu"):
        loaders = build_loaders(data, (rows, rows[: args.batch_size]), loader_config, seed=0, device=on)
        return loaders.train if on != "cpu" else loaders.train.loader  # uint8 pixels, or images on the device

    common = dict(batch_size=args.batch_size, num_workers=args.workers, persistent_workers=False)
    found = {
        "ours": (lambda: ours(), None),
        "decode": (lambda: DataLoader(Decode(data.source.images, len(rows)), **common), None),
    }
    if "timm" in args.compare:
        from timm.data import create_transform

        paths = [data.source.images.paths[i][0] for i in rows]
        for name, prefetcher in (("timm", False), ("timm-prefetcher", True)):
            transform = create_transform(args.img_size, is_training=True, use_prefetcher=prefetcher)
            dataset = TimmStyle(paths, data.targets[rows], transform)
            found[name] = (lambda dataset=dataset: DataLoader(dataset, shuffle=True, drop_last=True, **common), None)
    if device.type == "cuda":
        found[f"ours on {device}"] = (lambda: ours(device), device)
    return found


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    timed = variants(args)
    results: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.repeats):
        for name, (make, device) in timed.items():
            results[name].append(rate(make, device))
    workers = max(args.workers, 1)
    print(
        f"{args.images} images of {args.train_csv}, {args.img_size} px, batch {args.batch_size}, {args.workers} "
        f"worker(s), --aug {args.aug}; medians of {args.repeats} alternating passes"
    )
    ours = statistics.median(results["ours"]) / workers
    for name, rates in results.items():
        median = statistics.median(rates)
        print(
            f"FIGURE loader {name:<22} {median:9.0f} images/s  {median / workers:7.0f} per worker core  "
            f"(ours / this: {ours / (median / workers):5.2f})  runs: {', '.join(f'{r:.0f}' for r in rates)}"
        )
