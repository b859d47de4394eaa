"""``--fold all``: train every fold in turn, each in its own sub-folder, then gather the out-of-fold predictions.

A finished fold (its ``summary.json`` exists) is skipped and an interrupted one resumed from its newest
checkpoint, so re-running the command (or ``--resume <run folder>``) continues fold by fold; the folder's own
``config.yaml`` is checked against the command's, never rewritten (`src.tracking.rundir.check_continuation`).
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from src.config import Config
from src.inference.oof import probability_columns, read_predictions, write_predictions
from src.metrics import score
from src.tracking import rundir
from src.utils import distributed, files

logger = logging.getLogger(__name__)


def fold_config(config: Config, run_dir: Path, fold: int) -> Config:
    """The single-fold config of ``fold``: its sub-folder ``fold<k>``, resumed when it holds checkpoints."""
    fold_dir = rundir.fold_dir(run_dir, fold)
    resume = str(fold_dir) if rundir.has_checkpoint(fold_dir) else None
    return config.replace(fold=fold, output_dir=str(run_dir), run_name=fold_dir.name, resume=resume, restart=False)


def run_all_folds(
    config: Config,
    train_fold: Callable[..., object],
    before_fold: Callable[[Path], None] | None = None,
    epochs_for: Callable[[int, Path], int | None] | None = None,
    started: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Trains each of ``config.split.folds`` folds with ``train_fold`` (`src.train.run`; finished folds are skipped),
    writes ``oof.csv`` (every training row once: id, fold, labels, probabilities from its fold's best checkpoint) and
    ``cv_summary.json``, and prints the per-fold scores, their mean and standard deviation, and the OOF score of
    ``--metric``.

    ``train_fold(fold config, started=...)`` (`src.train.run`) calls ``started(fold folder)`` once the fold's checks
    have passed and its folder is written; a new run's own folder and ``config.yaml`` are written then, so a command
    that the first fold refuses leaves nothing behind (``--restart`` moves the old run aside first), and
    ``started(run folder)`` is called. ``before_fold(run folder)`` is called before each fold is trained
    (`src.training.stopping.StopRequests.check_between` stops there on a signal or near the time limit).
    ``epochs_for(fold, run folder)`` (`src.training.budget.Budget`) sets each fold's epochs, or None leaves that fold
    and the later ones out (``oof.csv`` then covers the folds trained).

    Returns:
        The cross-validation summary: metric, per-fold scores, mean, std, OOF score, run folder.
    """
    run_dir = rundir.cv_run_dir(config)
    going_on = rundir.is_run(run_dir) and not config.run.restart  # the same command again: the same settings
    if going_on:
        rundir.go_on(run_dir, rundir.check_continuation(run_dir, config))
    elif config.run.restart:
        rundir.start(run_dir, config)
    opened = going_on or config.run.restart

    def fold_started(fold_dir: Path) -> None:
        nonlocal opened
        if not opened:  # the first fold passed its checks: the run's folder is written now
            rundir.start(run_dir, config)
            opened = True
        if started is not None:
            started(run_dir)

    folds = config.split.folds
    for fold in range(folds):
        if rundir.is_finished(rundir.fold_dir(run_dir, fold)):
            logger.info("fold %d: finished earlier, skipped", fold)
            continue
        epochs = epochs_for(fold, run_dir) if epochs_for is not None else config.optim.epochs
        if epochs is None:
            break
        if before_fold is not None:
            before_fold(run_dir)
        train_fold(fold_config(config, run_dir, fold).replace(epochs=epochs), started=fold_started)
        free_memory()

    distributed.barrier()  # rank 0 has written every fold's predictions
    trained = [k for k in range(folds) if rundir.is_finished(rundir.fold_dir(run_dir, k))]
    return gather_oof(config, run_dir, trained)


def free_memory() -> None:
    """Frees what the fold just trained kept: ignite's engines and their handlers hold one another in reference
    cycles, so the fold's model, optimizer and weight averages stay allocated (on the GPU) until the cycle collector
    runs; then CUDA's cached blocks go back to the driver, so the next fold's ``--batch-size auto`` sees the whole
    GPU."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def gather_oof(config: Config, run_dir: Path, folds: list[int] | None = None) -> dict[str, Any]:
    """Gathers the folds' ``valid_predictions.csv`` of ``run_dir`` into ``oof.csv``, writes ``cv_summary.json``
    (rank 0) and prints the per-fold scores, their mean and standard deviation, and the OOF score of ``--metric``.

    ``folds``: the folds to gather (default: all ``--folds``).

    Returns:
        The cross-validation summary: metric, per-fold scores, mean, std, OOF score, run folder.
    """
    folds = list(range(config.split.folds)) if folds is None else folds
    task = rundir.read_task(rundir.fold_dir(run_dir, folds[0]))
    metric, threshold = config.eval.metric, config.eval.threshold
    columns = probability_columns(task)
    tables, fold_probs, fold_targets, fold_scores = [], [], [], []
    for k in folds:
        frame, probs, targets = read_predictions(rundir.fold_dir(run_dir, k) / rundir.PREDICTIONS, task)
        fold_scores.append(score(metric, probs, targets, task, threshold))
        head = len(frame.columns) - len(columns)
        if list(frame.columns[head:]) == columns:  # as written: the table's probabilities held once, in `probs`
            frame = pd.concat([frame.iloc[:, :head], pd.DataFrame(probs, columns=columns, copy=False)], axis=1)
        tables.append(frame)
        fold_probs.append(probs)
        fold_targets.append(targets)
    oof = pd.concat(tables, ignore_index=True)
    probs, targets = np.concatenate(fold_probs), np.concatenate(fold_targets)
    summary = {
        "metric": metric,
        "fold_scores": [round(s, 6) for s in fold_scores],
        "mean": round(float(np.mean(fold_scores)), 6),
        "std": round(float(np.std(fold_scores)), 6),
        "oof_score": round(score(metric, probs, targets, task, threshold), 6),
        "oof_rows": len(oof),
        "folds": folds,
        "run_dir": str(run_dir),
    }
    if not distributed.is_main():
        return summary
    write_predictions(oof, run_dir / rundir.OOF)
    files.write_text(run_dir / rundir.CV_SUMMARY, json.dumps(summary, indent=1))
    per_fold = " ".join(f"{s:.4f}" for s in fold_scores)
    print(
        f"{metric} per fold: {per_fold}; mean {summary['mean']:.4f} +- {summary['std']:.4f}; "
        f"OOF {summary['oof_score']:.4f} on {len(oof)} rows; run folder: {run_dir}"
    )
    return summary
