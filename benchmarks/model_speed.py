"""Training-step speed of one architecture under memory formats, activations and batch sizes.

    python -m benchmarks.model_speed [--arch effnet-b0] [--img-size 32] [--in-chans 1] [--iters 15]
        [--batch-sizes 64,128] [--activations default,silu] [--layouts contiguous,channels_last]
        [--output-strides 32,16]

Random inputs, AdamW, cross entropy; prints images/s for each variant (best of 2 timings).
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
import torch.nn.functional as F

from src.activations import replace_activations
from src.config import ModelConfig
from src.model import build_model


def images_per_second(model, batch_size, img_size, in_chans, iters, channels_last):
    x = torch.randn(batch_size, in_chans, img_size, img_size)
    y = torch.randint(0, 10, (batch_size,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    best = 0.0
    for repeat in range(3):  # the first is warm-up
        start = time.perf_counter()
        for _ in range(iters):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        if repeat:
            best = max(best, batch_size * iters / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="effnet-b0")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--batch-sizes", default="64,128")
    parser.add_argument("--activations", default="default,silu")
    parser.add_argument("--layouts", default="contiguous,channels_last")
    parser.add_argument("--output-strides", default="32")
    args = parser.parse_args()
    print(f"{args.arch} {args.img_size}px in_chans={args.in_chans}, {torch.get_num_threads()} threads")
    for batch_size, activation, channels_last, output_stride in itertools.product(
        [int(b) for b in args.batch_sizes.split(",")],
        args.activations.split(","),
        [layout == "channels_last" for layout in args.layouts.split(",")],
        [int(s) for s in args.output_strides.split(",")],
    ):
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch=args.arch, in_chans=args.in_chans, output_stride=output_stride), 10)
        if activation != "default":
            replace_activations(model, activation)
        rate = images_per_second(model, batch_size, args.img_size, args.in_chans, args.iters, channels_last)
        layout = "channels_last" if channels_last else "contiguous"
        print(
            f"batch {batch_size:4d}  activation {activation:8s} {layout:13s}  output stride {output_stride:2d}  "
            f"{rate:7.1f} images/s"
        )


if __name__ == "__main__":
    main()
