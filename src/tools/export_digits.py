"""Exports the bundled digits to competition layouts, to train on them through the layout readers.

    python -m src.tools.export_digits --out data/digits --layout images   # train.csv + train/<id>.png
    python -m src.tools.export_digits --out data/digits --layout pixels   # train_pixels.csv (label,pixel0..783)

then e.g. ``python -m src.train --train-csv data/digits/train.csv --image-dir data/digits/train``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd


def write_image_folder(images: np.ndarray, labels, out: Path, ext: str = "png") -> Path:
    """Writes ``out/train/<id>.<ext>`` for each uint8 image (N, H, W[, C]) and ``out/train.csv`` (id,label).

    Colour images (H, W, 3) are given as RGB and written as the file format's BGR. Returns the CSV path.
    """
    folder = out / "train"
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"img{i:05d}" for i in range(len(images))]
    for image_id, image in zip(ids, images):
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(folder / f"{image_id}.{ext}"), image):
            raise OSError(f"could not write {folder / f'{image_id}.{ext}'}")
    path = out / "train.csv"
    pd.DataFrame({"id": ids, "label": [str(v) for v in labels]}).to_csv(path, index=False)
    return path


def write_pixel_csv(images: np.ndarray, labels, path: Path) -> Path:
    """Writes Kaggle's Digit Recognizer layout: ``label,pixel0,...,pixel<H*W*C - 1>``, one row per image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = images.reshape(len(images), -1)
    table = pd.DataFrame(flat, columns=[f"pixel{i}" for i in range(flat.shape[1])])
    table.insert(0, "label", [str(v) for v in labels])
    table.to_csv(path, index=False)
    return path


def main() -> None:
    from src.loaddata import load_digits

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layout", choices=["images", "pixels"], required=True)
    args = parser.parse_args()
    data = load_digits()
    images, labels = data.source.images.images, [data.classes[t] for t in data.targets]
    if args.layout == "images":
        print(write_image_folder(images, labels, args.out))
    else:
        print(write_pixel_csv(images, labels, args.out / "train_pixels.csv"))


if __name__ == "__main__":
    main()
