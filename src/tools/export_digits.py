"""Exports the bundled digits to competition layouts, to train on them through the layout readers.

    python -m src.tools.export_digits --out data/digits --layout images   # train.csv + train/<id>.png
    python -m src.tools.export_digits --out data/digits --layout pixels   # train_pixels.csv (label,pixel0..783)
    python -m src.tools.export_digits --out data/digits --layout images --test-fraction 0.1
        # a competition: train.csv + train/, test.csv + test/ (ids only), sample_submission.csv, solution.csv

then e.g. ``python -m src.train --train-csv data/digits/train.csv --image-dir data/digits/train``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd


def write_image_folder(
    images: np.ndarray, labels, out: Path, ext: str = "png", name: str = "train", ids: list[str] | None = None
) -> Path:
    """Writes ``out/<name>/<id>.<ext>`` for each uint8 image (N, H, W[, C]) and ``out/<name>.csv`` (id,label;
    id only when ``labels`` is None).

    Colour images (H, W, 3) are given as RGB and written as the file format's BGR. Returns the CSV path.
    """
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    ids = ids or [f"img{i:05d}" for i in range(len(images))]
    for image_id, image in zip(ids, images):
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(folder / f"{image_id}.{ext}"), image):
            raise OSError(f"could not write {folder / f'{image_id}.{ext}'}")
    path = out / f"{name}.csv"
    table = pd.DataFrame({"id": ids})
    if labels is not None:
        table["label"] = [str(v) for v in labels]
    table.to_csv(path, index=False)
    return path


def write_competition(images: np.ndarray, labels: list[str], out: Path, test_fraction: float, seed: int = 0) -> Path:
    """Splits the images (stratified, seeded) into a labelled train set and an unlabelled test set, written like a
    Kaggle competition: ``train.csv`` + ``train/``, ``test.csv`` + ``test/`` (ids only), ``sample_submission.csv``
    (id, label = the first class) and ``solution.csv`` (the test labels, for scoring). Returns ``out``."""
    from sklearn.model_selection import train_test_split

    ids = np.array([f"img{i:05d}" for i in range(len(images))])
    rows = np.arange(len(images))
    train, test = train_test_split(rows, test_size=test_fraction, stratify=labels, random_state=seed)
    train, test = np.sort(train), np.sort(test)
    labels = np.asarray(labels)
    write_image_folder(images[train], labels[train], out, ids=ids[train].tolist())
    write_image_folder(images[test], None, out, name="test", ids=ids[test].tolist())
    first_class = sorted(set(labels.tolist()))[0]
    pd.DataFrame({"id": ids[test], "label": first_class}).to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame({"id": ids[test], "label": labels[test]}).to_csv(out / "solution.csv", index=False)
    return out


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

    parser = argparse.ArgumentParser(
        prog="python -m src.tools.export_digits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FOLDER", help="the folder to write (created)")
    parser.add_argument(
        "--layout", choices=["images", "pixels"], required=True,
        help="images: train.csv + one PNG per digit; pixels: one CSV row of 784 pixel values per digit",
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.0, metavar="FRACTION",
        help="hold out this fraction of the digits (stratified) as a competition's test set; images layout only "
        "(default: 0, no test set)",
    )
    args = parser.parse_args()
    data = load_digits()
    images, labels = data.source.images.images, [data.classes[t] for t in data.targets]
    if args.test_fraction > 0:
        if args.layout != "images":
            parser.error("--test-fraction writes the images layout")
        print(write_competition(images, labels, args.out, args.test_fraction))
    elif args.layout == "images":
        print(write_image_folder(images, labels, args.out))
    else:
        print(write_pixel_csv(images, labels, args.out / "train_pixels.csv"))


if __name__ == "__main__":
    main()
