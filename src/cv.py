"""``--fold all``: train every fold in turn, each in its own sub-folder, then gather the out-of-fold predictions.

A finished fold (its ``summary.json`` exists) is skipped and an interrupted one resumed from its newest
checkpoint, so re-running the command (or ``--resume <run folder>``) continues fold by fold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from ignite.utils import setup_logger

from src.config import CONFIG_FILENAME, Config, save_config
from src.metrics import score
from src.oof import OOF_FILENAME, PREDICTIONS_FILENAME, read_predictions
from src.targets import Task
from src.train import CLASSES_FILENAME, SUMMARY_FILENAME, run

CV_SUMMARY_FILENAME = "cv_summary.json"


def cv_run_dir(config: Config) -> Path:
    """The parent folder of an all-folds run: ``--resume``'s folder, ``--output-dir/--run-name``, or a new
    ``<arch>-folds<K>-<timestamp>``."""
    if config.resume:
        return Path(config.resume)
    name = config.run_name or f"{config.arch}-folds{config.folds}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path(config.output_dir) / name


def fold_config(config: Config, run_dir: Path, fold: int) -> Config:
    """The single-fold config of ``fold``: its sub-folder ``fold<k>``, resumed when it holds checkpoints."""
    fold_dir = run_dir / f"fold{fold}"
    resume = str(fold_dir) if any(fold_dir.glob("checkpoint_*.pt")) else None
    return dataclasses.replace(config, fold=fold, output_dir=str(run_dir), run_name=f"fold{fold}", resume=resume)


def run_all_folds(config: Config) -> dict:
    """Trains each of ``config.folds`` folds with `src.train.run` (skipping finished ones), writes ``oof.csv`` (every
    training row once: id, fold, labels, probabilities from its fold's best checkpoint) and ``cv_summary.json``,
    and prints the per-fold scores, their mean and standard deviation, and the OOF score of ``config.metric``.

    Returns:
        The cross-validation summary: metric, per-fold scores, mean, std, OOF score, run folder.
    """
    logger = setup_logger("src.train", level=logging.INFO)  # configured once; run() gets the same logger
    run_dir = cv_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(dataclasses.replace(config, run_name=None, resume=None), run_dir / CONFIG_FILENAME)
    for fold in range(config.folds):
        if (run_dir / f"fold{fold}" / SUMMARY_FILENAME).is_file():
            logger.info("fold %d: finished earlier, skipped", fold)
            continue
        run(fold_config(config, run_dir, fold))

    task = Task.from_dict(json.loads((run_dir / "fold0" / CLASSES_FILENAME).read_text()))
    folds = [read_predictions(run_dir / f"fold{fold}" / PREDICTIONS_FILENAME, task) for fold in range(config.folds)]
    fold_scores = [score(config.metric, probs, targets, task, config.threshold) for _, probs, targets in folds]
    oof = pd.concat([frame for frame, _, _ in folds], ignore_index=True)
    oof.to_csv(run_dir / OOF_FILENAME, index=False)
    probs, targets = (np.concatenate([fold[i] for fold in folds]) for i in (1, 2))
    summary = {
        "metric": config.metric,
        "fold_scores": [round(s, 6) for s in fold_scores],
        "mean": round(float(np.mean(fold_scores)), 6),
        "std": round(float(np.std(fold_scores)), 6),
        "oof_score": round(score(config.metric, probs, targets, task, config.threshold), 6),
        "oof_rows": len(oof),
        "run_dir": str(run_dir),
    }
    (run_dir / CV_SUMMARY_FILENAME).write_text(json.dumps(summary, indent=1))
    per_fold = " ".join(f"{s:.4f}" for s in fold_scores)
    print(
        f"{config.metric} per fold: {per_fold}; mean {summary['mean']:.4f} +- {summary['std']:.4f}; "
        f"OOF {summary['oof_score']:.4f} on {len(oof)} rows; run folder: {run_dir}"
    )
    return summary
