"""Predict a test set with a trained run: ``python -m src.predict --run experiments/<run> --test-csv ... [flags]``.

Loads the run's config, class list and best checkpoint of every fold (a ``--fold all`` run) or of the run
itself, predicts each test image under every test-time augmentation variant (`src.tta`), merges the variants,
averages the folds, and writes ``test_predictions.csv`` (id + per-class probabilities) and ``submission.csv``
(`src.submission`). ``--oof`` predicts each fold's validation rows again with the same TTA and prints the
out-of-fold score with and without it, so one can see on OOF whether a TTA helps before submitting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from ignite.utils import setup_logger
from torch.utils.data import DataLoader

from src.augmentations import build_transforms
from src.config import CONFIG_FILENAME, Config, load_config_file, run_cli
from src.engine import predict_logits
from src.loaddata import ImageDataset, SequenceToTensor
from src.metrics import score, to_probs, tune_thresholds
from src.oof import OOF_FILENAME, PREDICTIONS_FILENAME, predictions_frame, read_predictions, rows_of
from src.sources import read_source
from src.submission import DEFAULT_FORMAT, make_submission, write_submission
from src.targets import Task
from src.train import CLASSES_FILENAME, resolve_device, setup_model
from src.tta import MERGES, Variant, merge, tta_variants

TEST_PREDICTIONS_FILENAME = "test_predictions.csv"


@dataclasses.dataclass
class PredictConfig:
    """Predict a test set with a trained run (every fold's best checkpoint) and write the submission."""

    run: str
    """The run folder: one fold's run, or a `--fold all` run (its fold<k>/ sub-folders)."""
    test_csv: str | None = None
    """The test table (ids; same layout as training). None with --oof only scores the OOF predictions."""
    image_dir: str | None = None
    """Folder of the test images (layout 'images'); None: the training --image-dir."""
    parquet: str | None = None
    """Parquet file(s) of the test images (layout 'parquet'); None: the training --parquet."""
    tta: str = "none"
    """Test-time augmentation: none, flip, d4, multiscale, or an albumentations .yaml/.json file."""
    tta_merge: Literal["mean", "geometric", "max"] = "mean"
    """How the TTA variants' probabilities are combined."""
    oof: bool = False
    """Also predict each fold's validation rows with --tta and print the OOF score with and without it."""
    submission_format: Literal["label", "topk", "tags", "long", "probs"] | None = None
    """label, topk, tags, long or probs (src/submission.py); None: label, tags or long by the task."""
    top_k: int = 3
    """Guesses per row of the topk format (QuickDraw: 3)."""
    threshold: float | None = None
    """Tag threshold of the tags format; None: the run's --threshold."""
    tune_thresholds: bool = False
    """Multi-label: per-tag thresholds that maximise the run's --metric (e.g. f2) on its oof.csv (Planet)."""
    clip: float = 0.0
    """The probs format clips probabilities to [clip, 1 - clip] (log loss)."""
    sample_submission: str | None = None
    """A sample submission: fixes the id order and column names, and the result is checked against it."""
    output_dir: str | None = None
    """Where test_predictions.csv and submission.csv go; None: the run folder."""
    batch_size: int = 256
    """Images per forward pass."""
    num_workers: int = 0
    """DataLoader workers."""
    device: str = "auto"
    """'auto', 'cpu', 'cuda' or 'cuda:N'."""


@dataclasses.dataclass
class FoldModel:
    """One fold of a run: its folder, resolved training config, task and best checkpoint."""

    run_dir: Path
    config: Config
    task: Task
    checkpoint: Path


def best_checkpoint(run_dir: Path) -> Path:
    """The ``best_model_*.pt`` of ``run_dir`` with the highest score (ignite writes lower-is-better ones negated).

    Raises:
        FileNotFoundError: the folder has none.
    """
    candidates = list(run_dir.glob("best_model_*.pt"))
    if not candidates:
        raise FileNotFoundError(f"{run_dir}: no best_model_*.pt checkpoint; train the run (to its first epoch) first")
    return max(candidates, key=lambda p: float(re.sub(r"\.pt$", "", p.name).rsplit("=", 1)[-1]))


def load_folds(run: str | Path) -> list[FoldModel]:
    """The fold models of a run folder (``fold<k>/`` sub-folders of a ``--fold all`` run, or the folder itself).

    Raises:
        FileNotFoundError: no such folder, or a fold without its config, class list or best checkpoint.
        ValueError: folds with different class lists.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"--run {run}: no such run folder")
    dirs = sorted(run.glob("fold[0-9]*"), key=lambda p: int(p.name[4:])) or [run]
    folds = []
    for fold_dir in dirs:
        for name in (CONFIG_FILENAME, CLASSES_FILENAME):
            if not (fold_dir / name).is_file():
                raise FileNotFoundError(f"{fold_dir}: no {name}; is it a run folder of src.train?")
        task = Task.from_dict(json.loads((fold_dir / CLASSES_FILENAME).read_text()))
        folds.append(FoldModel(fold_dir, load_config_file(fold_dir / CONFIG_FILENAME), task, best_checkpoint(fold_dir)))
    if any(f.task != folds[0].task for f in folds):
        raise ValueError(f"--run {run}: the folds have different class lists")
    return folds


def source_config(fold: FoldModel, args: PredictConfig) -> Config:
    """The fold's config pointed at the test data (same layout, no class cap)."""
    if args.test_csv is None:
        raise ValueError(
            "--test-csv: needed to predict a test set (the bundled digits have none; export a split with "
            "python -m src.tools.export_digits --test-fraction 0.1)"
        )
    return dataclasses.replace(
        fold.config,
        train_csv=args.test_csv,
        image_dir=args.image_dir or fold.config.image_dir,
        parquet=args.parquet or fold.config.parquet,
        max_per_class=None,
    )


def predict_images(fold: FoldModel, images, args: PredictConfig, device: torch.device, logger) -> np.ndarray:
    """Probabilities (N, num_outputs) of ``fold``'s best model on ``images`` (a reader, `src.sources`), each
    merged over the TTA variants."""
    config = fold.config
    model = setup_model(config, fold.task, device)
    model.load_state_dict(torch.load(fold.checkpoint, map_location=device, weights_only=True))
    sequences = getattr(images, "sequence", False)
    img_size = config.size_schedule[-1][1]  # the last size of a progressive schedule
    variants = [Variant("none", [], img_size)] if sequences else tta_variants(args.tta, img_size)
    targets = np.zeros(len(images), dtype=np.int64)
    probs = []
    for variant in variants:
        transform = (
            SequenceToTensor()
            if sequences
            else build_transforms(
                variant.img_size,
                config.mean_list,
                config.std_list,
                resize_mode=config.resize_mode,
                extra=variant.transforms,
            )
        )
        loader = DataLoader(
            ImageDataset(images, targets, transform), batch_size=args.batch_size, num_workers=args.num_workers
        )
        logits = predict_logits(model, loader, device, amp=config.amp, channels_last=config.channels_last)
        probs.append(to_probs(logits, fold.task))
        logger.info("%s: %s, variant %s: %d images", fold.run_dir.name, fold.checkpoint.name, variant.name, len(images))
    return merge(probs, args.tta_merge, fold.task)


def predict_test(
    folds: list[FoldModel], args: PredictConfig, device: torch.device, logger
) -> tuple[list[str], np.ndarray]:
    """The test ids and the fold-averaged probabilities (N, num_outputs)."""
    source = read_source(source_config(folds[0], args))
    probs = np.mean([predict_images(fold, source.images, args, device, logger) for fold in folds], axis=0)
    return source.ids(), probs


def predict_oof(folds: list[FoldModel], args: PredictConfig, device: torch.device, logger) -> dict:
    """Each fold's validation rows predicted again with ``args.tta``; returns the OOF scores without and with it
    and writes ``oof_tta-<tta>.csv``."""
    task, config = folds[0].task, folds[0].config
    train = read_source(config)
    train_ids = train.ids()
    plain, tta = [], []
    for fold in folds:
        frame, probs, targets = read_predictions(fold.run_dir / PREDICTIONS_FILENAME, task)
        where = f"{fold.run_dir / PREDICTIONS_FILENAME} against the training data"
        rows = rows_of(train_ids, frame["id"].tolist(), where)
        tta_probs = predict_images(fold, train.images.subset(rows), args, device, logger)
        plain.append((probs, targets))
        tta.append((frame, tta_probs, targets))
    targets = np.concatenate([t for _, t in plain])
    result = {
        "metric": config.metric,
        "oof_no_tta": score(config.metric, np.concatenate([p for p, _ in plain]), targets, task, config.threshold),
        f"oof_tta_{Path(args.tta).stem}": score(
            config.metric, np.concatenate([p for _, p, _ in tta]), targets, task, config.threshold
        ),
    }
    frames = [
        predictions_frame(list(frame["id"]), p, task, folds=frame["fold"].to_numpy(), labels=frame)
        for frame, p, _ in tta
    ]
    out = Path(args.output_dir or args.run)
    out.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_csv(out / f"oof_tta-{Path(args.tta).stem}.csv", index=False)
    return result


def predict(args: PredictConfig) -> dict:
    """Runs the prediction as configured; returns what it wrote and scored."""
    logger = setup_logger("src.predict", level=logging.INFO)
    if args.tta_merge not in MERGES:
        raise ValueError(f"--tta-merge {args.tta_merge!r}: unknown; known: {', '.join(MERGES)}")
    folds = load_folds(args.run)
    device = resolve_device(args.device)
    task, config = folds[0].task, folds[0].config
    result: dict = {"folds": len(folds), "tta": args.tta}
    if args.oof:
        result.update(predict_oof(folds, args, device, logger))
        print(
            f"OOF {result['metric']}: {result['oof_no_tta']:.4f} without TTA, "
            f"{result[f'oof_tta_{Path(args.tta).stem}']:.4f} with --tta {args.tta}"
        )
    if args.test_csv is None:
        if not args.oof:
            raise ValueError("--test-csv: needed to predict a test set (or pass --oof to score the OOF predictions)")
        return result
    ids, probs = predict_test(folds, args, device, logger)
    out = Path(args.output_dir or args.run)
    out.mkdir(parents=True, exist_ok=True)
    predictions_frame(ids, probs, task).to_csv(out / TEST_PREDICTIONS_FILENAME, index=False)
    fmt = args.submission_format or DEFAULT_FORMAT[task.kind]
    threshold = config.threshold if args.threshold is None else args.threshold
    if args.tune_thresholds:
        _, oof_probs, oof_targets = read_predictions(Path(args.run) / OOF_FILENAME, task)
        threshold = tune_thresholds(oof_probs, oof_targets, task, config.metric)
        result["thresholds"] = dict(zip(task.classes, threshold.tolist()))
        print(f"thresholds tuned on OOF {config.metric}: {result['thresholds']}")
    submission = make_submission(ids, probs, task, fmt, config.id_col, args.top_k, threshold, args.clip)
    path = write_submission(submission, out, args.sample_submission)
    result.update(rows=len(submission), submission=str(path))
    print(f"{len(ids)} test images, {len(folds)} fold(s), --tta {args.tta}: wrote {path}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(predict, PredictConfig, argv)


if __name__ == "__main__":
    sys.exit(main())
