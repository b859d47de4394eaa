"""Loader speed per data layout: decode + augment images/s in one process, and training images/s with the
layout's loader in the loop vs the model fed from batches already in memory.

    python -m benchmarks.loader_speed [--images 2000] [--iters 20] [--img-size 32] [--repeats 3] [--only images pixels]

With ``--train-csv`` and ``--image-dir`` (a photo competition, e.g. ``python -m src.tools.make_photos``), the
loader per worker core against timm's on those files instead (`benchmarks.photo_loader`).

The bundled digits are written to each layout in a temporary folder (image folder of PNGs, pixel CSV,
parquet, six single-channel PNGs per image) and read through `load_data` exactly as training does; the
strokes layout uses random polylines (1-5 strokes of 6 points) with the digits' labels.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.engine_overhead import ignite_loop
from src.config import Config, LoaderConfig, ModelConfig
from src.data.folds import assign_folds, split_indices
from src.loaddata import build_loaders, load_data, load_digits
from src.model import build_model
from src.tools.export_digits import write_image_folder, write_pixel_csv
from src.training.assembly import reading


def write_layouts(root: Path, n: int) -> dict[str, Config]:
    """Writes n digits in each layout under root; returns the config that reads each."""
    data = load_digits()
    rows = np.random.default_rng(0).permutation(len(data))[:n]
    images, labels = data.source.images.images[rows], [data.classes[t] for t in data.targets[rows]]
    configs = {"digits (in memory)": Config()}
    csv = write_image_folder(images, labels, root / "png")
    configs["images (PNG files)"] = Config.of(train_csv=str(csv), image_dir=str(root / "png" / "train"))
    configs["images (PNG, --cache)"] = Config.of(train_csv=str(csv), image_dir=str(root / "png" / "train"), cache=True)
    configs["pixels (CSV)"] = Config.of(train_csv=str(write_pixel_csv(images, labels, root / "pixels.csv")))
    flat = images.reshape(n, -1)
    ids = [f"img{i}" for i in range(n)]
    pq.write_table(
        pa.table({"image_id": ids, **{str(j): flat[:, j] for j in range(flat.shape[1])}}), root / "x.parquet"
    )
    pd.DataFrame({"image_id": ids, "label": labels}).to_csv(root / "parquet_labels.csv", index=False)
    configs["parquet"] = Config.of(
        train_csv=str(root / "parquet_labels.csv"), parquet=str(root / "x.parquet"), id_col="image_id"
    )
    six = root / "six"
    six.mkdir()
    for image_id, image in zip(ids, images):
        for c in range(1, 7):
            cv2.imwrite(str(six / f"{image_id}_w{c}.png"), image)
    pd.DataFrame({"id": ids, "label": labels}).to_csv(root / "six.csv", index=False)
    configs["6-channel PNG files"] = Config.of(
        train_csv=str(root / "six.csv"),
        image_dir=str(six),
        image_template="{id}_w{channel}.png",
        channels="1,2,3,4,5,6",
    )
    rng = np.random.default_rng(1)
    drawings = [
        json.dumps(
            [
                [sorted(rng.integers(0, 256, 6).tolist()), rng.integers(0, 256, 6).tolist()]
                for _ in range(rng.integers(1, 6))
            ]
        )
        for _ in range(n)
    ]
    pd.DataFrame({"drawing": drawings, "word": labels, "key_id": ids}).to_csv(root / "strokes.csv", index=False)
    configs["strokes (CSV)"] = Config.of(train_csv=str(root / "strokes.csv"), label_col="word", id_col="key_id")
    return configs


def measure(config: Config, iters: int, img_size: int, batch_size: int, model, repeats: int = 3) -> dict[str, float]:
    """Times one layout; the training figures are the best of ``repeats`` alternating runs (the spread
    between runs of 20 iterations is ~10% on a 2-core machine)."""
    config = config.replace(img_size=img_size)
    start = time.perf_counter()
    data = load_data(config.data, reading(config))
    load_s = time.perf_counter() - start
    train_idx, valid_idx = split_indices(assign_folds(data, 5, seed=42), 0, seed=42)
    loader = LoaderConfig(img_size=img_size, batch_size=batch_size, aug="light", num_workers=0)
    loaders = build_loaders(data, (train_idx, valid_idx), loader, seed=42)
    dataset = loaders.train.dataset
    count = min(len(dataset), iters * batch_size)
    start = time.perf_counter()
    for i in range(count):
        dataset[i]
    per_worker = count / (time.perf_counter() - start)
    iters = min(iters, len(loaders.train))
    in_memory = [b for b, _ in zip(loaders.train, range(iters))]
    lr = 1e-3
    model_in_memory = with_loader = 0.0
    for _ in range(repeats):
        seconds = ignite_loop(copy.deepcopy(model), in_memory, lr, iters)
        model_in_memory = max(model_in_memory, images_s(seconds, iters, batch_size))
        seconds = ignite_loop(copy.deepcopy(model), loaders.train, lr, iters)
        with_loader = max(with_loader, images_s(seconds, iters, batch_size))
    return {
        "load_s": load_s,
        "decode_augment_per_worker": per_worker,
        "train_in_memory": model_in_memory,
        "train_with_loader": with_loader,
    }


def images_s(seconds: float, iters: int, batch_size: int) -> float:
    return iters * batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="layouts whose name starts with one of these")
    photos = parser.add_argument_group("a photo competition (benchmarks.photo_loader)")
    photos.add_argument("--train-csv", help="its train.csv: time the loader on these files")
    photos.add_argument("--image-dir", help="the folder of its images")
    photos.add_argument("--image-template", default="{id}.jpg", help="an image's path under --image-dir")
    photos.add_argument("--workers", type=int, default=1, help="worker processes of every loader")
    photos.add_argument("--compare", nargs="*", default=[], choices=["timm"], help="time timm's train pipeline too")
    photos.add_argument("--aug", default="light", help="our train augmentation (--aug of training)")
    photos.add_argument("--device", default="cpu", help="with cuda: also the rate delivered on the GPU")
    args = parser.parse_args()
    if args.train_csv:
        from benchmarks import photo_loader

        args.images = args.images if args.images != 2000 else 1536
        photo_loader.main(args)
        return
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        configs = write_layouts(Path(tmp), args.images)
        print(
            f"{args.images} digits per layout, {args.img_size} px, batch {args.batch_size}, light augmentation, "
            f"{torch.get_num_threads()} threads, num_workers=0, training: best of {args.repeats} x {args.iters} iters"
        )
        print(
            f"{'layout':<24} {'read+check s':>12} {'decode+aug img/s':>17} {'train, in memory':>17} "
            f"{'train, loader':>14} {'ratio':>6}"
        )
        for name, config in configs.items():
            if args.only and not any(name.startswith(prefix) for prefix in args.only):
                continue
            in_chans = 6 if "6-channel" in name else 1
            model = build_model(ModelConfig(in_chans=in_chans), 10).to(memory_format=torch.channels_last)
            r = measure(config, args.iters, args.img_size, args.batch_size, model, args.repeats)
            print(
                f"{name:<24} {r['load_s']:>12.1f} {r['decode_augment_per_worker']:>17.0f} "
                f"{r['train_in_memory']:>17.1f} {r['train_with_loader']:>14.1f} "
                f"{r['train_with_loader'] / r['train_in_memory']:>6.2f}"
            )


if __name__ == "__main__":
    main()
