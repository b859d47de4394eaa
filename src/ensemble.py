"""Blend runs: ``python -m src.ensemble runA runB ... [--method mean|geometric|rank] [--weights auto|equal|1,2]``.

Reads each run's out-of-fold predictions (``oof.csv`` of a ``--fold all`` run) and, when present, its test
predictions (``test_predictions.csv`` of `src.predict`), checks that the runs share the class list and the OOF
ids, blends them, reports the OOF score of each run and of the blend, and writes ``oof.csv``,
``test_predictions.csv`` and ``submission.csv`` of the blend.

Check, then write: the runs' files (finite probabilities; test ids each once), the weights and the sample
submission are checked before the blend is fitted, and the blend's files are written together at the end
(`src.inference.outputs.replacing`): a refused or failed command leaves the earlier ones as they were and makes no
folder.

``--weights auto`` maximises the blend's OOF metric over the weights (non-negative, summing to 1) with scipy's
Nelder-Mead from equal weights, and keeps the best single run's weights if the search ends below it, so the
blend never scores below the best run on OOF.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import tyro
from scipy.optimize import minimize
from scipy.stats import rankdata

from src.cli import parse_args, run_cli
from src.config import Config, load_config_file
from src.config.choices import SUBMISSION_FORMATS
from src.inference import stacking
from src.inference.oof import predictions_frame, read_predictions, write_predictions
from src.inference.outputs import check_folder, replacing
from src.inference.submission import (
    DEFAULT_FORMAT,
    SubmissionFormat,
    check_finite,
    check_sample,
    check_unique,
    make_submission,
    submission_columns,
    submission_ids,
    write_submission,
)
from src.inference.tta import renormalise
from src.metrics import get_metric, score
from src.targets import Task
from src.tracking import rundir, share

METHODS = ("mean", "geometric", "rank")


@dataclasses.dataclass
class EnsembleConfig:
    """Blend the OOF and test predictions of several runs."""

    runs: Annotated[
        list[str], tyro.conf.Positional, tyro.conf.arg(metavar="RUN [RUN ...]", help_behavior_hint="(two or more)")
    ]
    """Run folders of `--fold all` runs (each with oof.csv; test_predictions.csv for a submission), or mlflow:<run-id>
    for a run shared with `src.runs push` (downloaded once into ~/.cache/kaggle-trainer/mlflow)."""
    mlflow: str | None = None
    """The tracking store of mlflow:<run-id> runs; None: the MLFLOW_TRACKING_URI environment variable."""
    method: Literal["mean", "geometric", "rank", "stack"] = "mean"
    """Weighted mean of probabilities, weighted geometric mean, weighted mean of per-class ranks (AUC), or 'stack': a
    level-2 model (--stacker) fitted on the OOF probabilities, its OOF score from stackers fitted on the other folds
    (src/inference/stacking.py; one problem per tag or head for multi-label and multi-head runs)."""
    stacker: Literal["logistic", "ridge", "gbm"] = "logistic"
    """The level-2 model of --method stack: scikit-learn's logistic regression, ridge regression on one-hot targets,
    or HistGradientBoostingClassifier."""
    stack_features: Literal["auto", "all", "own"] = "auto"
    """What each tag's or head's stacker reads: 'all' the runs' columns, 'own' the runs' columns of its own tag or
    head; 'auto': all up to 256 columns (runs x outputs), own beyond (1,000 tags: linear, not quadratic, in the
    tags)."""
    weights: str = "auto"
    """'auto' (maximise the OOF metric), 'equal', or comma-separated weights, one per run."""
    metric: str | None = None
    """The OOF metric; None: the first run's --metric."""
    output_dir: str = "experiments/ensemble"
    """Where the blend's files go."""
    submission_format: Literal[SUBMISSION_FORMATS] | None = None
    """As in src.predict; None: label, tags or long by the task."""
    top_k: int = 3
    """Guesses per row of the topk format."""
    sample_submission: str | None = None
    """A sample submission fixing the id order and columns, checked against the result."""
    allow_different_folds: bool = False
    """Blend runs whose OOF rows sit in other folds (refused by default: their blend's OOF score leaks); the blend's
    ensemble.json then says same_folds: false."""


def blend(probs: list[np.ndarray], weights: np.ndarray, method: str, task: Task) -> np.ndarray:
    """Weighted blend of probability arrays (N, num_outputs).

    Raises:
        ValueError: unknown method.
    """
    return combine(prepare(probs, method), weights, method, task)


def prepare(probs: list[np.ndarray] | np.ndarray, method: str) -> np.ndarray:
    """What the blend ``method`` averages, for the runs side by side (runs, N, num_outputs): the probabilities
    (mean), their logs (geometric) or their per-class ranks scaled to [0, 1] (rank: only the order of the rows
    matters). It does not depend on the weights: `fit_weights` prepares it once.

    Raises:
        ValueError: unknown method.
    """
    stack = np.asarray(probs)  # (runs, N, num_outputs)
    if method == "mean":
        return stack
    if method == "geometric":
        return np.log(np.clip(stack, 1e-15, 1.0))
    if method == "rank":
        return np.stack([rankdata(p, axis=0) / len(p) for p in stack])
    raise ValueError(f"--method {method!r}: unknown; known: {', '.join(METHODS)}")


def combine(prepared: np.ndarray, weights: np.ndarray, method: str, task: Task) -> np.ndarray:
    """The blend (N, num_outputs) of the runs' `prepare`d values with ``weights`` (normalised to sum 1)."""
    weights = np.asarray(weights, np.float64) / np.sum(weights)
    merged = np.tensordot(weights, prepared, axes=1)
    if method != "geometric":
        return merged
    merged = np.exp(merged)
    return merged if task.kind == "multilabel" else renormalise(merged, task)


def fit_weights(
    probs: list[np.ndarray], targets: np.ndarray, task: Task, metric: str, method: str, threshold: float = 0.5
) -> np.ndarray:
    """Weights (sum 1) maximising the OOF ``metric`` of the blend; never worse than the best single run."""
    sign = 1.0 if get_metric(metric).higher_is_better else -1.0
    prepared = prepare(probs, method)  # once, not at each of the search's ~30 blends

    def value(weights: np.ndarray) -> float:
        return sign * score(metric, combine(prepared, weights, method, task), targets, task, threshold)

    def loss(logits: np.ndarray) -> float:  # softmax keeps the weights positive and summing to 1
        weights = np.exp(logits - logits.max())
        return -value(weights / weights.sum())

    result = minimize(loss, np.zeros(len(probs)), method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-6})
    weights = np.exp(result.x - result.x.max())
    weights /= weights.sum()
    singles = [value(np.eye(len(probs))[i]) for i in range(len(probs))]
    best = int(np.argmax(singles))
    return weights if value(weights) >= singles[best] else np.eye(len(probs))[best]


def run_task(run: Path) -> Task:
    """The task (class lists) of a run folder.

    Raises:
        FileNotFoundError: a folder without ``classes.json`` and ``oof.csv`` (not a finished ``--fold all`` run).
    """
    classes = rundir.first_file(run, rundir.CLASSES)
    if classes is None or not (run / rundir.OOF).is_file():
        raise FileNotFoundError(f"{run}: no {rundir.OOF}; ensembles take finished --fold all runs")
    return Task.from_dict(json.loads(classes.read_text()))


def aligned(
    paths: list[Path], task: Task, what: str, fold_differences: list[tuple[Path, list[str]]] | None = None
) -> tuple[pd.DataFrame, list[str], list[np.ndarray]]:
    """Reads prediction files and puts their probabilities in the first file's row order. With
    ``fold_differences``, each other file whose ``fold`` column differs from the first file's on some ids is
    appended to it as (path, those ids in the first file's order).

    Returns:
        The first file's table, its ids, and each file's probabilities (N, num_outputs) in that order.

    Raises:
        ValueError: a file whose ids differ from the first one's; NaN or infinite probabilities (`check_finite`);
            with ``what`` "test", an id listed twice (a submission holds each once).
    """
    frame, first = _read(paths[0], task, what)
    order = frame["id"].tolist()
    unique = len(set(order)) == len(order)  # then a file in this order is used as it is, without a copy
    probs = [first if unique else _reordered(first, order, order)]
    for path in paths[1:]:  # the other files' tables are dropped as soon as read
        other, p = _read(path, task, what)
        ids = other["id"].tolist()
        if ids != order and sorted(ids) != sorted(order):
            raise ValueError(f"{path}: its {what} ids differ from {paths[0]}'s; blend runs of the same rows")
        probs.append(p if unique and ids == order else _reordered(p, ids, order))
        if fold_differences is not None and "fold" in frame and "fold" in other:
            fold_of = dict(zip(ids, other["fold"].tolist()))
            differing = [i for i, fold in zip(order, frame["fold"].tolist()) if fold_of[i] != fold]
            if differing:
                fold_differences.append((path, differing))
    return frame, order, probs


def _read(path: Path, task: Task, what: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A prediction file's table and probabilities, checked (see `aligned`)."""
    frame, probs = read_predictions(path, task, with_targets=False)[:2]
    ids = frame["id"].tolist()
    if what == "test":
        check_unique(ids, str(path))
    check_finite(ids, probs, str(path))
    return frame, probs


def _reordered(probs: np.ndarray, ids: list[str], order: list[str]) -> np.ndarray:
    """The rows of ``probs`` (one per id of ``ids``) in the order of the ids ``order``."""
    position = {image_id: row for row, image_id in enumerate(ids)}
    return probs[[position[i] for i in order]]


def blend_weights(
    args: EnsembleConfig, probs: list[np.ndarray], targets: np.ndarray, task: Task, metric: str, threshold: float
) -> np.ndarray:
    """The runs' weights (sum 1): ``--weights auto`` fitted on OOF, ``equal``, or as given.

    Raises:
        ValueError: given weights that are not one non-negative number per run, not all 0.
    """
    if args.weights == "auto":
        return fit_weights(probs, targets, task, metric, args.method, threshold)
    if args.weights == "equal":
        return np.full(len(probs), 1.0 / len(probs))
    return given_weights(args.weights, len(probs))


def given_weights(text: str, runs: int) -> np.ndarray:
    """``--weights 1,2``: one non-negative number per run, not all 0, normalised to sum 1.

    Raises:
        ValueError: anything else (the message names the flag and what it expects).
    """
    expected = f"--weights {text!r}: expected 'auto', 'equal' or {runs} non-negative numbers, not all 0"
    try:
        weights = np.array([float(w) for w in text.split(",")])
    except ValueError:
        raise ValueError(expected) from None
    if len(weights) != runs or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() == 0:
        raise ValueError(expected)
    return weights / weights.sum()


def check_folds(differences: list[tuple[Path, list[str]]], first: Path, rows: int, allowed: bool) -> None:
    """Runs blended on other folds leak: each run's models trained on rows another run validates on, so the OOF
    score of the blend (and of a stacker fitted on it) is too high. Our own: no library checks it.

    Raises:
        ValueError: folds that differ, naming the run, how many rows and the first ids; unless ``allowed``
            (``--allow-different-folds``), which only warns.
    """
    for path, ids in differences:
        shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
        message = (
            f"{path.parent}: its folds differ from {first}'s on {len(ids)} of {rows} rows ({shown}); a blend of "
            "runs on other folds leaks into its OOF score: train on the same folds (--folds-from RUN, or the same "
            "--split-seed and --folds), or pass --allow-different-folds"
        )
        if not allowed:
            raise ValueError(message)
        print(f"warning: {message}; the OOF score is not comparable", file=sys.stderr)


def check_classes(first_task: Task, task: Task, first: str, run: str) -> None:
    """Runs blend only on the same label encoding (classes and their order, `share.label_fingerprint`: the team
    table's ``classes`` column); ``--allow-different-folds`` never waives it, as it waives a leak, not outputs that
    mean other classes.

    Raises:
        ValueError: naming both runs and the first difference (the class's position and its names); or their
            head weights, which weight the multi-head metric.
    """
    difference = share.label_difference(first_task, task, (f"in {_short(first)}", f"in {_short(run)}"))
    if difference is not None:
        raise ValueError(f"{run}: its class list differs from {first}'s ({difference}); blend runs of the same "
                         "classes in the same order")
    if task != first_task:
        raise ValueError(f"{run}: its head weights {list(task.weights)} differ from {first}'s "
                         f"{list(first_task.weights)}; blend runs of the same task")


def has_test_predictions(runs: list[Path]) -> bool:
    """Whether every run has its test predictions; warns when only some have them (the blend then has none)."""
    tests = [run / rundir.TEST_PREDICTIONS for run in runs]
    if all(path.is_file() for path in tests):
        return True
    if any(path.is_file() for path in tests):
        lacking = [str(run) for run, path in zip(runs, tests) if not path.is_file()]
        print(f"warning: no {rundir.TEST_PREDICTIONS} in {', '.join(lacking)}: the blend has no submission "
              "(predict those runs with src.predict first)", file=sys.stderr)
    return False


def check_runs(args: EnsembleConfig) -> tuple[list[Path], Task, Config]:
    """The run folders to blend, their common task and the first run's saved config, once the arguments are checked.

    Raises:
        ValueError: fewer than two runs, bad --weights, an --output-dir that is a file, or runs of different
            tasks (`check_classes`).
        FileNotFoundError: a run without its saved config.
    """
    if len(args.runs) < 2:
        raise ValueError("give at least two run folders to blend")
    runs = [share.resolve_run(r, args.mlflow) for r in args.runs]
    if args.weights not in ("auto", "equal"):
        given_weights(args.weights, len(runs))
    check_folder(Path(args.output_dir), "--output-dir")
    task = run_task(runs[0])
    for name, run in zip(args.runs[1:], runs[1:]):
        check_classes(task, run_task(run), args.runs[0], name)
    config_file = rundir.first_file(runs[0], rundir.CONFIG)
    if config_file is None:
        raise FileNotFoundError(f"{runs[0]}: no {rundir.CONFIG}; ensembles take finished --fold all runs")
    return runs, task, load_config_file(config_file)


def ensemble(args: EnsembleConfig) -> dict:
    """Blends the runs as configured; returns the scores and weights (see the module doc: check, then write)."""
    runs, task, config = check_runs(args)
    names = [spec if spec.startswith(share.SHARE_PREFIX) else str(run) for spec, run in zip(args.runs, runs)]
    out = Path(args.output_dir)
    metric, threshold = args.metric or config.eval.metric, config.eval.threshold
    features = stacking.resolve_features(args.stack_features, len(runs), task)
    differences: list[tuple[Path, list[str]]] = []
    frame, order, probs = aligned([run / rundir.OOF for run in runs], task, "OOF", differences)
    check_folds(differences, runs[0], len(order), args.allow_different_folds)
    targets = task.encode(frame, where=str(runs[0] / rundir.OOF))
    tests = [run / rundir.TEST_PREDICTIONS for run in runs]
    has_test = has_test_predictions(runs)
    if has_test:
        _, ids, test_probs = aligned(tests, task, "test")
        form = SubmissionFormat(args.submission_format or DEFAULT_FORMAT[task.kind], config.data.id_col, args.top_k,
                                threshold)
        if args.sample_submission:
            check_sample(submission_columns(task, form), submission_ids(ids, task, form), args.sample_submission)
    if args.method == "stack":
        weights = None
        folds = frame["fold"].to_numpy()
        blended = stacking.honest_oof(np.concatenate(probs, 1), targets, folds, task, args.stacker, features)
    else:
        weights = blend_weights(args, probs, targets, task, metric, threshold)
        blended = blend(probs, weights, args.method, task)
    result = {
        "metric": metric,
        "method": args.method,
        "runs": {name: round(score(metric, p, targets, task, threshold), 6) for name, p in zip(names, probs)},
        "weights": None if weights is None else [round(float(w), 4) for w in weights],
        **({"stacker": args.stacker, "stack_features": features} if weights is None else {}),
        "oof_blend": round(score(metric, blended, targets, task, threshold), 6),
        "same_folds": not differences,  # False: runs on other folds, an OOF score not comparable (leaks)
    }
    tables = {out / rundir.OOF: predictions_frame(order, blended, task, folds=frame["fold"].to_numpy(), labels=frame)}
    submission = None
    if has_test:
        if weights is None:
            test_blend = stacking.fit_predict(
                np.concatenate(probs, 1), targets, np.concatenate(test_probs, 1), task, args.stacker, features
            )
        else:
            test_blend = blend(test_probs, weights, args.method, task)
        tables[out / rundir.TEST_PREDICTIONS] = predictions_frame(ids, test_blend, task)
        submission = make_submission(ids, test_blend, task, form)
        result["submission"] = str(out / rundir.SUBMISSION)
    paths = [*tables, out / rundir.ENSEMBLE] + ([out / rundir.SUBMISSION] if submission is not None else [])
    with replacing(paths) as temps:
        for table, temp in zip(tables.values(), temps):
            write_predictions(table, temp)
        temps[len(tables)].write_text(json.dumps(result, indent=1))
        if submission is not None:
            write_submission(submission, temps[-1], args.sample_submission)
    singles = ", ".join(f"{_short(r)} {s:.4f}" for r, s in result["runs"].items())
    stacker = f"a {args.stacker} stacker on {features} columns (honest OOF)"
    how = f"weights {result['weights']}" if weights is not None else stacker
    print(f"OOF {metric}: {singles}; blend {result['oof_blend']:.4f} with {how}; wrote {out}")
    return result


def _short(name: str) -> str:
    """A run as the summary line names it: a folder's name, or ``mlflow:<run-id>``."""
    return name if name.startswith(share.SHARE_PREFIX) else Path(name).name


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: ensemble(parse_args(EnsembleConfig, argv, prog="python -m src.ensemble")))


if __name__ == "__main__":
    sys.exit(main())
