"""Shared test helpers, the one module tests import besides src: tiny models and data made on the spot, writers
of tiny competition layouts, and the flags of a tiny training run."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from ignite.engine import Events
from torch import nn

from src.config import Config
from src.data.folds import assign_folds, split_indices
from src.data.images import ArrayImages
from src.data.sources import Source
from src.inference.oof import predictions_frame
from src.loaddata import Data, load_data
from src.targets import Head, Task
from src.tools.export_digits import write_image_folder, write_pixel_csv
from src.training.assembly import reading
from src.training.checkpoints import read_checkpoint

CPU = torch.device("cpu")
# A training run in seconds: 4% of the bundled digits (160 train images, 5 batches of 32), 32 train-eval images.
TINY = ["--data-fraction", "0.04", "--train-eval-size", "32", "--batch-size", "32", "--no-progress"]


class TinyClassifier(nn.Module):
    """Averages over (H, W) and applies one linear layer: (N, C, H, W) -> (N, num_classes). No BatchNorm."""

    def __init__(self, in_chans: int = 1, num_classes: int = 3):
        super().__init__()
        self.fc = nn.Linear(in_chans, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class TinyConvNet(nn.Module):
    """A small conv net without BatchNorm that can fit spatial patterns."""

    def __init__(self, in_chans: int = 1, num_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.fc = nn.Linear(8 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def make_blobs(n: int, num_classes: int, size: int = 16, in_chans: int = 1, seed: int = 0):
    """Images whose class is the quadrant holding a bright square, plus noise: (n, C, size, size), (n,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = 0.1 * torch.randn(n, in_chans, size, size, generator=g)
    half = size // 2
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label % 4, 2)
        x[i, :, r * half : (r + 1) * half, c * half : (c + 1) * half] += 1.0
    return x, y


def fake_data(n=120, num_classes=4, shape=(20, 20), seed=0) -> Data:
    """Random uint8 images (n, *shape) with labels cycling through ``num_classes`` classes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = np.arange(n) % num_classes
    task = Task("single", (Head("label", tuple(f"c{i}" for i in range(num_classes))),))
    table = pd.DataFrame({"id": [str(i) for i in range(n)], "label": [f"c{i}" for i in labels]})
    return Data(Source(table, ArrayImages(images), "fake.csv", "id"), task, labels.astype(np.int64))


def split(data: Data, folds: int, fold: int, **kwargs):
    """The (train, valid) row indices of ``fold`` of a seed-0 split."""
    return split_indices(assign_folds(data, folds, seed=0), fold, seed=0, **kwargs)


def load(**fields) -> Data:
    """Reads data as the trainer does, from flat config fields (``train_csv=..., image_dir=...``)."""
    config = Config.of(**fields)
    return load_data(config.data, reading(config))


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


# Bengali-style heads: 3 root classes and 2 vowel classes, weighted 2:1.
HEADS = Task("multihead", (Head("root", ("a", "b", "c")), Head("vowel", ("x", "y"))), (2.0, 1.0))


def backbone_classifier(num_classes: int = 4):
    """A `Classifier` on a one-conv backbone (with BatchNorm), for fine-tuning tests."""
    from src.model import Classifier

    backbone = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    return Classifier(backbone, num_features=8, num_classes=num_classes)


def blend_runs(rng, n=60):
    """Targets (n,) of 3 classes and four runs' probabilities (n, 3): good, chance, right on the first half only,
    right on the second half only."""
    targets = rng.integers(0, 3, n)
    onehot = np.eye(3)[targets]
    good = 0.6 * onehot + 0.4 * rng.dirichlet(np.ones(3), n)  # mostly right
    noisy = rng.dirichlet(np.ones(3), n)  # chance
    left = np.where(np.arange(n)[:, None] < n // 2, 0.7 * onehot + 0.1, 1 / 3)  # right on the first half only
    right = np.where(np.arange(n)[:, None] >= n // 2, 0.7 * onehot + 0.1, 1 / 3)
    return targets, good, noisy, left, right


def free_port() -> int:
    """A free TCP port on the loopback interface, for a process group's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    """The ``checkpoint_<iteration>.pt`` of ``run_dir`` saved at the end of ``epoch`` (1-based)."""
    for path in Path(run_dir).glob("checkpoint_*.pt"):
        trainer = read_checkpoint([path])[1]["trainer"]
        if trainer["iteration"] == epoch * trainer["epoch_length"]:
            return path
    raise AssertionError(f"{run_dir}: no checkpoint of epoch {epoch}")


@contextlib.contextmanager
def webhook_server() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it: yields (its URL, the bodies)."""
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length)) | {"_path": self.path})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token", received
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[dict[str, str], list]]:
    """A local SMTP server on 127.0.0.1 (aiosmtpd) that keeps the messages it receives: yields (the SMTP_*
    environment that points at it, the received `email.message.Message` objects)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list = []

    class Keep(Message):
        def handle_message(self, message):
            received.append(message)

    port = free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_FROM": "trainer@test"}, received
    finally:
        controller.stop()


def tensorboard_tags(log_dir: Path) -> dict[str, list[str]]:
    """The tags of the TensorBoard event files in ``log_dir`` (tensorboard's own event reader): ``{"images":
    [...], "scalars": [...], "tensors": [...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    return events.Tags()


def tensorboard_image(log_dir: Path, tag: str) -> np.ndarray:
    """The last image logged under ``tag``, decoded: uint8 (H, W, 3)."""
    import io

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    return np.asarray(Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string)).convert("RGB"))


def signal_at(monkeypatch, iteration, signum):
    """Sends ``signum`` to this process after ``iteration`` (before the stop check of that iteration)."""
    import src.training.trainer

    attach = src.training.trainer.attach_stopping

    def attach_with_signal(trainer, *args, **kwargs):
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=iteration), lambda: os.kill(os.getpid(), signum))
        attach(trainer, *args, **kwargs)

    monkeypatch.setattr(src.training.trainer, "attach_stopping", attach_with_signal)


ABC_TASK = Task("single", (Head("label", ("a", "b", "c")),))


def write_run(folder, ids, labels, probs, test_probs, task=ABC_TASK, folds=None):
    """A finished run's files as `src.ensemble` reads them: one fold's classes.json and config, oof.csv (two
    folds: by default each id's place in the sorted ids, mod 2, so runs of the same ids share their folds in any
    row order; or ``folds``, one per row) and test_predictions.csv."""
    place = {image_id: k for k, image_id in enumerate(sorted(ids))}
    folds = np.array([place[i] % 2 for i in ids]) if folds is None else np.asarray(folds)
    folder.mkdir(parents=True)
    (folder / "fold0").mkdir()
    (folder / "fold0" / "classes.json").write_text(json.dumps(task.to_dict()))
    (folder / "fold0" / "config.yaml").write_text(yaml.safe_dump({"arch": "effnet-b0"}))  # a flat config
    labels_frame = pd.DataFrame({"label": labels})
    predictions_frame(ids, probs, task, folds=folds, labels=labels_frame).to_csv(
        folder / "oof.csv", index=False
    )
    predictions_frame([f"t{i}" for i in range(len(test_probs))], test_probs, task).to_csv(
        folder / "test_predictions.csv", index=False
    )


def fingerprint(root: Path) -> dict[str, tuple[int, str] | None]:
    """Every file under ``root`` by relative path: (size in bytes, sha256); every folder: None. Two equal
    fingerprints mean the tree is byte-identical: no file changed, added or removed, no folder made."""
    import hashlib

    root = Path(root)
    prints: dict[str, tuple[int, str] | None] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        prints[key] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()) if path.is_file() else None
    return prints


def fingerprint_changes(before: dict, after: dict) -> list[str]:
    """What differs between two `fingerprint`s: ``added x``, ``removed x``, ``changed x``."""
    changes = [f"added {k}" for k in after if k not in before] + [f"removed {k}" for k in before if k not in after]
    return changes + [f"changed {k}" for k in before if k in after and before[k] != after[k]]


def assert_refused(capsys, main, argv: list[str], folder: Path, expected: str) -> str:
    """Runs an entry point's ``main(argv)`` and checks the refusal contract: exit code 2, exactly one ``error:``
    line holding ``expected``, no traceback, and ``folder`` byte-identical (`fingerprint`). Returns the line."""
    before = fingerprint(folder)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    changes = fingerprint_changes(before, fingerprint(folder))
    assert not changes, f"a refused command changed {folder}: {changes[:5]}"
    return lines[0]
