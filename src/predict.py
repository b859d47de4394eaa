"""Predict a test set with a trained run: ``python -m src.predict --run experiments/<run> --test-csv ... [flags]``.

Loads the run's config, class list and best checkpoint of every fold (a ``--fold all`` run) or of the run
itself, predicts each test image under every test-time augmentation variant (`src.inference.tta`), merges the variants,
averages the folds, and writes ``test_predictions.csv`` (id + per-class probabilities) and ``submission.csv``
(`src.inference.submission`). ``--oof`` predicts each fold's validation rows again with the same TTA and prints the
out-of-fold score with and without it, so one can see on OOF whether a TTA helps before submitting.

Check, then write: the run folder, every fold's weights, the test ids (each once), the sample submission and the
format are read and checked before the first model runs, the probabilities (finite) and the submission after, and
the outputs are written together at the end (`src.inference.outputs.replacing`): a refused or failed command leaves the
earlier ``test_predictions.csv``, ``submission.csv`` and ``oof_tta-*.csv`` as they were and makes no folder.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from src.augmentations import build_pixel_transforms
from src.cli import parse_args, run_cli
from src.config import Config
from src.config.choices import SUBMISSION_FORMATS
from src.data.batch_augment import DeviceStage
from src.data.images import PointSequences, Reading
from src.data.prefetch import DeviceLoader
from src.data.sources import Source, read_source
from src.inference.oof import predictions_frame, read_predictions, rows_of, write_predictions
from src.inference.outputs import check_folder, read_weights, replacing
from src.inference.submission import (
    DEFAULT_FORMAT,
    SubmissionFormat,
    check_finite,
    check_format,
    check_sample,
    check_unique,
    make_submission,
    submission_columns,
    submission_ids,
    write_submission,
)
from src.inference.tta import MERGES, Merge, Variant, tta_variants
from src.loaddata import ImageDataset, SequenceToTensor, default_num_workers, one_opencv_thread_per_worker
from src.metrics import score, to_probs, tune_thresholds
from src.model import check_shapes
from src.tracking import rundir, share
from src.tracking.rundir import FoldRun
from src.training.assembly import reading, resolve_device, setup_model
from src.training.engine import predict_logits

logger = logging.getLogger("src.predict")  # not __name__: "__main__" under python -m


@dataclasses.dataclass
class PredictConfig:
    """Predict a test set with a trained run (every fold's best checkpoint) and write the submission."""

    run: str
    """The run folder: one fold's run, or a `--fold all` run (its fold<k>/ sub-folders); or mlflow:<run-id>, a run
    shared with `src.runs push --with-checkpoints` (downloaded once into ~/.cache/kaggle-trainer/mlflow; needs
    --output-dir)."""
    mlflow: str | None = None
    """The tracking store of a mlflow:<run-id> --run; None: the MLFLOW_TRACKING_URI environment variable."""
    test_csv: str | None = None
    """The test table (ids; same layout as training). None: the run's --test-csv (`src.kaggle inspect` writes it),
    except with --oof, which then only scores the OOF predictions."""
    image_dir: str | None = None
    """Folder of the test images (layout 'images'); None: the run's --test-image-dir, else its --image-dir."""
    parquet: str | None = None
    """Parquet file(s) of the test images (layout 'parquet'); None: the run's --test-parquet, else its --parquet."""
    tta: str = "none"
    """Test-time augmentation: none, flip, d4, multiscale, or an albumentations .yaml/.json file."""
    tta_merge: Literal["mean", "geometric", "max"] = "mean"
    """How the TTA variants' probabilities are combined."""
    oof: bool = False
    """Also predict each fold's validation rows with --tta and print the OOF score with and without it."""
    submission_format: Literal[SUBMISSION_FORMATS] | None = None
    """label, topk, tags, long or probs (src/inference/submission.py); None: the run's --submission-format, else label,
    tags or long by the task."""
    top_k: int = 3
    """Guesses per row of the topk format (QuickDraw: 3)."""
    threshold: float | None = None
    """Tag threshold of the tags format; None: the run's --threshold."""
    tune_thresholds: bool = False
    """Multi-label: per-tag thresholds that maximise the run's --metric (e.g. f2) on its oof.csv (Planet)."""
    clip: float = 0.0
    """The probs format clips probabilities to [clip, 1 - clip] (log loss)."""
    sample_submission: str | None = None
    """A sample submission: fixes the id order and column names, and the result is checked against it; None: the
    run's --sample-submission (with the run's test set only)."""
    output_dir: str | None = None
    """Where test_predictions.csv and submission.csv go; None: the run folder."""
    batch_size: int = 256
    """Images per forward pass."""
    num_workers: int | None = None
    """DataLoader worker processes; None: 0 on CPU, every core but one on CUDA (as training)."""
    device: str = "auto"
    """'auto', 'cpu', 'cuda' or 'cuda:N'."""


def read_test(fold: FoldRun, args: PredictConfig) -> Source:
    """The test rows, read in the fold's training layout (no class cap).

    Raises:
        ValueError: no ``--test-csv``, or bad test data.
    """
    if args.test_csv is None:
        raise ValueError(
            "--test-csv: needed to predict a test set (the bundled digits have none; export a split with "
            "python -m src.tools.export_digits --test-fraction 0.1)"
        )
    data = fold.config.data
    test = dataclasses.replace(
        data,
        train_csv=args.test_csv,
        image_dir=args.image_dir or data.image_dir,
        parquet=args.parquet or data.parquet,
        max_per_class=None,
    )
    return read_source(test, tta_reading(fold.config, args.tta))


def tta_reading(config: Config, tta: str) -> Reading:
    """`src.training.assembly.reading` with image files decoded no smaller than the largest TTA variant: multiscale's
    1.125x view is resized from the file, not enlarged from a reduced-scale decode made for the training size.

    Raises:
        ValueError: an unknown ``tta`` (`tta_variants`).
    """
    given = reading(config)
    largest = max(variant.img_size for variant in tta_variants(tta, config.loader.size_schedule[-1][1]))
    return dataclasses.replace(given, decode_size=max(given.decode_size or 0, largest))


def predict_images(fold: FoldRun, source: Source, args: PredictConfig, device: torch.device) -> np.ndarray:
    """Probabilities (N, num_outputs) of ``fold``'s best model on ``source``'s images (`src.data.sources`), each
    merged over the TTA variants; a model trained with metadata reads the table's metadata columns, encoded as its
    checkpoint says (`src.data.metadata`).

    Raises:
        ValueError: the table lacks a metadata column the model was trained with.
    """
    config, images = fold.config, source.images
    model = setup_model(config, fold.task, device)
    state = read_weights(fold.checkpoint, device)
    check_shapes(state, model.state_dict(), str(fold.checkpoint))
    model.load_state_dict(state)
    meta = None if model.meta is None else model.meta.encoder.transform(source.table, str(source.where))
    sequences = isinstance(images, PointSequences)
    img_size = config.loader.size_schedule[-1][1]  # the last size of a progressive schedule
    variants = [Variant("none", [], img_size)] if sequences else tta_variants(args.tta, img_size)
    targets = np.zeros(len(images), dtype=np.int64)
    workers = default_num_workers(device) if args.num_workers is None else args.num_workers
    if workers:
        one_opencv_thread_per_worker()
    merged = Merge(args.tta_merge, fold.task, (len(images), fold.task.num_outputs), len(variants))
    for variant in variants:
        loader = DeviceLoader(
            DataLoader(
                ImageDataset(images, targets, _pixels(variant, config, sequences), meta),
                batch_size=args.batch_size,
                num_workers=workers,
                pin_memory=device.type == "cuda",
            ),
            device,
            DeviceStage(config.loader.mean or [], config.loader.std or [], config.step.channels_last),
        )
        logits = predict_logits(model, loader, device, config.step)
        for rows in row_blocks(len(logits)):  # float64 probabilities a block at a time, not a whole variant's
            merged.add(to_probs(logits[rows], fold.task), rows)
        logger.info("%s: %s, variant %s: %d images", fold.run_dir.name, fold.checkpoint.name, variant.name, len(images))
    return merged.result()


def row_blocks(rows: int, size: int = 4096) -> list[slice]:
    """``slice``s of ``size`` rows covering ``rows`` rows in order."""
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def _pixels(variant: Variant, config: Config, sequences: bool):
    """The pipeline of a test-time ``variant`` where the images are decoded (uint8 pixels, normalised on the device),
    or the point sequences' tensors."""
    if sequences:
        return SequenceToTensor()
    return build_pixel_transforms(variant.img_size, resize_mode=config.loader.resize_mode, extra=variant.transforms)


def predict_test(folds: list[FoldRun], source: Source, args: PredictConfig, device: torch.device) -> np.ndarray:
    """The fold-averaged probabilities (N, num_outputs) of the test rows ``source`` (`read_test`)."""
    total = predict_images(folds[0], source, args, device)
    for fold in folds[1:]:  # summed in fold order, as the mean over the stacked folds: one array held, not one a fold
        total += predict_images(fold, source, args, device)
    total /= len(folds)
    return total


def predict_oof(folds: list[FoldRun], args: PredictConfig, device: torch.device) -> tuple[dict, pd.DataFrame]:
    """Each fold's validation rows predicted again with ``args.tta``; returns the OOF scores without and with it
    and the table of ``oof_tta-<tta>.csv`` (written by `predict` with the other outputs)."""
    task, config = folds[0].task, folds[0].config
    train = read_source(config.data, tta_reading(config, args.tta))
    train_ids = train.ids()
    plain, tta = [], []
    for fold in folds:
        frame, probs, targets = read_predictions(fold.run_dir / rundir.PREDICTIONS, task)
        where = f"{fold.run_dir / rundir.PREDICTIONS} against the training data"
        rows = rows_of(train_ids, frame["id"].tolist(), where)
        tta_probs = predict_images(fold, train.subset(rows), args, device)
        plain.append((probs, targets))
        tta.append((frame, tta_probs, targets))
    targets = np.concatenate([t for _, t in plain])
    metric, threshold = config.eval.metric, config.eval.threshold
    without, with_tta = np.concatenate([p for p, _ in plain]), np.concatenate([p for _, p, _ in tta])
    result = {
        "metric": metric,
        "oof_no_tta": score(metric, without, targets, task, threshold),
        f"oof_tta_{Path(args.tta).stem}": score(metric, with_tta, targets, task, threshold),
    }
    frames = [
        predictions_frame(list(frame["id"]), p, task, folds=frame["fold"].to_numpy(), labels=frame)
        for frame, p, _ in tta
    ]
    return result, pd.concat(frames, ignore_index=True)


def predict(args: PredictConfig) -> dict:
    """Runs the prediction as configured (see the module doc: check, then write); returns what it wrote and scored.

    Raises:
        ValueError, FileNotFoundError: a damaged run folder or weights file, bad test data, ids listed twice or not
            those of the sample submission, a format the task has no use for, NaN probabilities; nothing is
            written then.
    """
    if args.tta_merge not in MERGES:
        raise ValueError(f"--tta-merge {args.tta_merge!r}: unknown; known: {', '.join(MERGES)}")
    args = pulled(args)
    folds = rundir.read_fold_runs(args.run)
    args = with_run_defaults(args, folds[0].config)
    task = folds[0].task
    tta_variants(args.tta, folds[0].config.loader.size_schedule[-1][1])  # an unknown --tta, before any work
    for fold in folds:
        read_weights(fold.checkpoint, mmap=True)  # each opens: a damaged file is named before any model runs
    if args.test_csv is None and not args.oof:
        raise ValueError("--test-csv: needed to predict a test set (or pass --oof to score the OOF predictions)")
    out = Path(args.output_dir or args.run)
    check_folder(out, "--output-dir")
    result: dict = {"folds": len(folds), "tta": args.tta}
    source = form = None
    if args.test_csv is not None:
        source = read_test(folds[0], args)
        ids = source.ids()
        check_unique(ids, args.test_csv)
        form = submission_format(folds[0], args, result)
        check_format(task, form)
        if args.sample_submission:
            check_sample(submission_columns(task, form), submission_ids(ids, task, form), args.sample_submission)
    device = resolve_device(args.device)
    outputs: dict[Path, pd.DataFrame] = {}
    if args.oof:
        scores, oof_frame = predict_oof(folds, args, device)
        result.update(scores)
        outputs[out / f"oof_tta-{Path(args.tta).stem}.csv"] = oof_frame
        print(
            f"OOF {result['metric']}: {result['oof_no_tta']:.4f} without TTA, "
            f"{result[f'oof_tta_{Path(args.tta).stem}']:.4f} with --tta {args.tta}"
        )
    submission = None
    if source is not None:
        probs = predict_test(folds, source, args, device)
        check_finite(ids, probs, f"--run {args.run}")
        outputs[out / rundir.TEST_PREDICTIONS] = predictions_frame(ids, probs, task)
        submission = make_submission(ids, probs, task, form)
    paths = list(outputs) + ([out / rundir.SUBMISSION] if submission is not None else [])
    with replacing(paths) as temps:
        for frame, temp in zip(outputs.values(), temps):
            write_predictions(frame, temp)
        if submission is not None:
            write_submission(submission, temps[-1], args.sample_submission)
    if submission is not None:
        result.update(rows=len(submission), submission=str(out / rundir.SUBMISSION))
        print(f"{len(ids)} test images, {len(folds)} fold(s), --tta {args.tta}: wrote {out / rundir.SUBMISSION}")
    return result


def pulled(args: PredictConfig) -> PredictConfig:
    """``args`` with a ``mlflow:<run-id>`` --run replaced by its downloaded folder (`share.resolve_run`).

    Raises:
        ValueError: such a --run without --output-dir (the downloaded copy is not written to); see `resolve_run`.
    """
    if not args.run.startswith(share.SHARE_PREFIX):
        return args
    if args.output_dir is None:
        raise ValueError(f"--run {args.run}: pass --output-dir (the downloaded run is not written to)")
    return dataclasses.replace(args, run=str(share.resolve_run(args.run, args.mlflow)))


def with_run_defaults(args: PredictConfig, config: Config) -> PredictConfig:
    """``args`` with what the run's config says of its competition (`src.config.run.CompetitionConfig`, from
    ``src.kaggle inspect``) where the flags leave it unset: the submission format, and, unless ``--test-csv`` or
    ``--oof`` is given, the test set and the sample submission."""
    competition = config.competition
    args = dataclasses.replace(args, submission_format=args.submission_format or competition.submission_format)
    if args.test_csv is not None or competition.test_csv is None or args.oof:
        return args
    return dataclasses.replace(
        args,
        test_csv=competition.test_csv,
        image_dir=args.image_dir or competition.test_image_dir,
        parquet=args.parquet or competition.test_parquet,
        sample_submission=args.sample_submission or competition.sample_submission,
    )


def submission_format(fold: FoldRun, args: PredictConfig, result: dict) -> SubmissionFormat:
    """The submission's format: ``--submission-format`` or the task's default, and its tag thresholds (the run's
    ``--threshold``, ``--threshold``, or per tag tuned on the run's ``oof.csv``, added to ``result``)."""
    task, config = fold.task, fold.config
    threshold = config.eval.threshold if args.threshold is None else args.threshold
    if args.tune_thresholds:
        _, oof_probs, oof_targets = read_predictions(Path(args.run) / rundir.OOF, task)
        threshold = tune_thresholds(oof_probs, oof_targets, task, config.eval.metric)
        result["thresholds"] = dict(zip(task.classes, threshold.tolist()))
        print(f"thresholds tuned on OOF {config.eval.metric}: {result['thresholds']}")
    name = args.submission_format or DEFAULT_FORMAT[task.kind]
    return SubmissionFormat(name, config.data.id_col, args.top_k, threshold, args.clip)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: predict(parse_args(PredictConfig, argv, prog="python -m src.predict")))


if __name__ == "__main__":
    sys.exit(main())
