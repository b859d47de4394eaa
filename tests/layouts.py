"""Writers of tiny competition layouts into a folder, shared by the data tests and the CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from src.tools.export_digits import write_image_folder, write_pixel_csv


def class_images(n: int, num_classes: int, size: int = 16, channels: int = 1, seed: int = 0):
    """uint8 images (n, size, size[, channels]) whose class is the quadrant holding a bright square."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    images = rng.integers(0, 40, size=(n, size, size, channels), dtype=np.uint8)
    half = size // 2
    for i, label in enumerate(labels):
        r, c = divmod(int(label) % 4, 2)
        images[i, r * half : (r + 1) * half, c * half : (c + 1) * half] = 220
    return (images[..., 0] if channels == 1 else images), labels


def image_folder(tmp: Path, n: int = 24, num_classes: int = 3, channels: int = 1) -> tuple[Path, Path]:
    images, labels = class_images(n, num_classes, channels=channels)
    csv = write_image_folder(images, [f"c{v}" for v in labels], tmp)
    return csv, tmp / "train"


def pixel_csv(tmp: Path, n: int = 24, num_classes: int = 3) -> Path:
    images, labels = class_images(n, num_classes)
    return write_pixel_csv(images, labels, tmp / "pixels.csv")


def parquet_multihead(tmp: Path, n: int = 24, height: int = 12, width: int = 16) -> tuple[Path, str]:
    """Bengali-style: two parquet files of image_id + height*width pixel columns, train.csv with 3 heads."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, height * width), dtype=np.uint8)
    ids = [f"Train_{i}" for i in range(n)]
    for part, rows in enumerate((slice(0, n // 2), slice(n // 2, n))):
        columns = {"image_id": ids[rows], **{str(j): images[rows, j] for j in range(height * width)}}
        pq.write_table(pa.table(columns), tmp / f"train_image_data_{part}.parquet")
    table = pd.DataFrame(
        {
            "image_id": ids[::-1],  # a different order from the parquet files
            "grapheme_root": [str(i % 4) for i in range(n)],
            "vowel_diacritic": [str(i % 3) for i in range(n)],
            "consonant_diacritic": [str(i % 2) for i in range(n)],
        }
    )
    table.to_csv(tmp / "train.csv", index=False)
    np.save(tmp / "images.npy", images.reshape(n, height, width))
    return tmp / "train.csv", str(tmp / "train_image_data_*.parquet")


# The flags that read `six_channel`'s layout, as Config fields.
SIX_CHANNEL = {"image_template": "{experiment}/{id}_w{channel}.png", "channels": "1,2,3,4,5,6", "label_col": "sirna"}


def six_channel(tmp: Path, n: int = 12, num_classes: int = 3) -> tuple[Path, Path]:
    """Recursion-style: one PNG per channel, ``<experiment>/<id>_w<channel>.png``, channel k filled with 10 k."""
    folder = tmp / "images" / "EXP-1"
    folder.mkdir(parents=True)
    images, labels = class_images(n, num_classes, size=16)
    for i, image in enumerate(images):
        for channel in range(1, 7):
            plane = np.where(image > 100, image, 10 * channel).astype(np.uint8)
            cv2.imwrite(str(folder / f"s{i}_w{channel}.png"), plane)
    table = pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(n)],
            "experiment": "EXP-1",
            "sirna": [str(v) for v in labels],
            "plate": [str(i % 4) for i in range(n)],
        }
    )
    table.to_csv(tmp / "train.csv", index=False)
    return tmp / "train.csv", tmp / "images"


def stroke_csvs(tmp: Path, per_class: int = 10, words=("cat", "house", "the sun")) -> Path:
    """QuickDraw-style: one CSV per class with countrycode, drawing, key_id, recognized, timestamp, word."""
    rng = np.random.default_rng(2)
    folder = tmp / "train_simplified"
    folder.mkdir()
    for w, word in enumerate(words):
        rows = []
        for i in range(per_class):
            strokes = []
            for s in range(w + 1):  # the class shows in the number of strokes and their place
                xs = sorted(rng.integers(0, 256, size=4).tolist())
                ys = [int(v) for v in np.clip(np.array(xs) * 0 + 60 * s + rng.integers(0, 30, 4), 0, 255)]
                strokes.append([xs, ys])
            rows.append(
                {
                    "countrycode": "US",
                    "drawing": json.dumps(strokes),
                    "key_id": f"{w}{i:04d}",
                    "recognized": True,
                    "timestamp": "2017-03-01 00:00:00",
                    "word": word,
                }
            )
        pd.DataFrame(rows).to_csv(folder / f"{word}.csv", index=False)
    return folder


def planet_multilabel(tmp: Path, n: int = 24) -> tuple[Path, Path]:
    """Planet-style: image_name, tags (space-separated), RGB JPEGs."""
    images, labels = class_images(n, 4, channels=3)
    folder = tmp / "train-jpg"
    folder.mkdir()
    names, tags = [], []
    for i, (image, label) in enumerate(zip(images, labels)):
        names.append(f"train_{i}")
        tags.append(" ".join(["clear", "primary"] if label % 2 == 0 else ["haze"] + (["water"] if label == 3 else [])))
        cv2.imwrite(str(folder / f"train_{i}.jpg"), image)
    pd.DataFrame({"image_name": names, "tags": tags}).to_csv(tmp / "train_v2.csv", index=False)
    return tmp / "train_v2.csv", folder
