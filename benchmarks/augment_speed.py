"""Train-time augmentation cost per image: the light preset per image in albumentations (``--no-batch-aug``)
against the batch pipeline (`src.data.batch_augment`), on the bundled digits at 32 px.

    python -m benchmarks.augment_speed [--batch-size 64] [--repeats 5]

The two alternate within each repeat; prints the median microseconds per image for 1 and 2 torch threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import default_collate

from src.augmentations import build_transforms, reseed
from src.data.batch_augment import DeviceStage, build_batch_pipeline
from src.loaddata import load_digits

CPU = torch.device("cpu")
MEAN, STD, ROWS = [0.13], [0.31], 2048


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    images = load_digits().source.images
    digits = [images[row] for row in range(ROWS)]
    per_image = build_transforms(32, MEAN, STD, aug="light", seed=0)
    pipeline, stage = build_batch_pipeline(32, "light", 0, "resize"), DeviceStage(MEAN, STD)

    def batch(images: list, keys: list) -> torch.Tensor:  # the workers' part, then the device stage on the CPU
        return stage(default_collate(pipeline(images, keys)), CPU)

    def albumentations_per_image(rows: range) -> None:
        for row in rows:
            reseed(per_image, (row, 0, 0))
            per_image(image=digits[row])

    def batch_pipeline(rows: range) -> None:
        batch([digits[row] for row in rows], [(row, 0, 0) for row in rows])

    for threads in (1, 2):
        torch.set_num_threads(threads)
        variants = {"albumentations per image": albumentations_per_image, "batch pipeline": batch_pipeline}
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                for first in range(0, ROWS - args.batch_size + 1, args.batch_size):
                    run(range(first, first + args.batch_size))
                results[name].append((time.perf_counter() - start) / ROWS * 1e6)
        medians = ", ".join(f"{name} {statistics.median(values):.1f} us" for name, values in results.items())
        print(f"{threads} thread(s), batches of {args.batch_size}: {medians} per image")


if __name__ == "__main__":
    main()
