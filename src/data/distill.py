"""Knowledge distillation from a teacher's out-of-fold predictions (Hinton, Vinyals and Dean 2015, "Distilling
the Knowledge in a Neural Network"; on Kaggle, a small fast model learning from a large model or a blend).

``--teacher <folder>`` (a ``--fold all`` run or an ensemble, with ``oof.csv``): each training row's target becomes
``w * soft + (1 - w) * hard`` (``--teacher-weight w``), where ``soft`` is the teacher's out-of-fold prediction of
that row, softened by ``--teacher-temperature T`` (softmax(log p / T) per head, sigmoid(logit p / T) per tag), and
``hard`` the row's label as a one-hot or multi-hot vector. The targets then flow through mixup and the loss like
any soft target. Only the training rows get them: the teacher's predictions of the valid fold are never read into
the student's training, and each training row's own prediction comes from a teacher model that did not train on
it, so the student's valid score stays honest. ``--teacher-test`` adds the test images with the teacher's test
predictions as their targets (pseudo-labelling with soft targets).

The mixing of soft targets is our own (a few lines); libraries distil with a live teacher model, not from saved
out-of-fold predictions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from src.config import Config
from src.data.images import Reading
from src.data.pseudo import test_images
from src.inference.oof import read_predictions, rows_of
from src.targets import Task
from src.tracking import rundir, share

logger = logging.getLogger(__name__)


def soften(probs: np.ndarray, task: Task, temperature: float) -> np.ndarray:
    """The teacher's probabilities at ``temperature``: float (N, num_outputs) -> float32 (N, num_outputs); each
    head's block sums to 1 (single, multi-head), each tag stays in [0, 1] (multi-label)."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    if task.kind == "multilabel":
        return (1 / (1 + np.exp(-np.log(p / (1 - p)) / temperature))).astype(np.float32)
    blocks, start = [], 0
    for size in task.sizes:
        logits = np.log(p[:, start : start + size]) / temperature
        logits -= logits.max(axis=1, keepdims=True)
        blocks.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
        start += size
    return np.concatenate(blocks, axis=1).astype(np.float32)


def hard_targets(targets: np.ndarray, task: Task) -> np.ndarray:
    """Encoded targets (`Task.encode`) as float32 (N, num_outputs) one-hot per head, or multi-hot."""
    if task.kind == "multilabel":
        return targets.astype(np.float32)
    columns = targets.reshape(len(targets), -1)
    return np.concatenate([np.eye(size, dtype=np.float32)[columns[:, h]] for h, size in enumerate(task.sizes)], 1)


def mix(hard: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """``weight * teacher + (1 - weight) * hard``, float32 (N, num_outputs)."""
    return (weight * teacher + (1.0 - weight) * hard).astype(np.float32)


def teacher_file(teacher: str, name: str, uri: str | None = None) -> Path:
    """``oof.csv`` or ``test_predictions.csv`` of the teacher folder, or of a run shared as ``mlflow:<run-id>``
    (`share.resolve_run`; ``uri``: the config's ``--mlflow``, else MLFLOW_TRACKING_URI).

    Raises:
        FileNotFoundError: the folder or the file is missing (the message says what makes one), or a run id the
            store does not hold; ValueError, ConnectionError: see `resolve_run`.
    """
    path = share.resolve_run(teacher, uri) / name
    if not path.is_file():
        made_by = "a --fold all run or src.ensemble" if name == rundir.OOF else "src.predict or src.ensemble"
        raise FileNotFoundError(f"--teacher {teacher}: no {name} (written by {made_by})")
    return path


def train_targets(
    config: Config, ids: list[str], targets: np.ndarray, rows: tuple[np.ndarray, np.ndarray], task: Task
) -> np.ndarray | None:
    """The distilled targets of the training rows, in ``train_idx`` order, or None with ``--teacher-weight 0``
    (plain labels; the teacher's file is still checked).

    Args:
        config: the ``distill`` group (and ``allow_different_folds``).
        ids: every data row's id; ``targets`` their encoded labels.
        rows: ``(fold_of, train_idx)``: the fold of every row, int64 (N,), and the training rows (the valid fold's
            rows are never looked up).

    Raises:
        FileNotFoundError: no ``oof.csv`` in the teacher folder.
        ValueError: the teacher has another label encoding (`check_teacher_classes`) or lacks a probability
            column or a training row, or was trained on other folds (its models saw this run's valid rows) without
            --allow-different-folds.
    """
    distill, (fold_of, train_idx) = config.distill, rows
    path = teacher_file(distill.teacher, rundir.OOF, config.track.mlflow)
    check_teacher_classes(path.parent, task, distill.teacher)
    frame, probs, _ = read_predictions(path, task, with_targets=False)
    check_teacher_folds(frame, ids, fold_of, path, config.split.allow_different_folds)
    wanted = [ids[i] for i in train_idx]
    rows = rows_of(frame["id"].astype(str).tolist(), wanted, f"--teacher {path}: training rows")
    if distill.teacher_weight == 0:
        logger.info("--teacher-weight 0: the labels alone (the teacher's %d rows checked)", len(frame))
        return None
    soft = soften(probs[rows], task, distill.teacher_temperature)
    logger.info(
        "distillation: %d training rows learn %.2f from %s at temperature %s",
        len(rows),
        distill.teacher_weight,
        path,
        distill.teacher_temperature,
    )
    return mix(hard_targets(targets[train_idx], task), soft, distill.teacher_weight)


def check_teacher_classes(folder: Path, task: Task, teacher: str) -> None:
    """The teacher's label encoding (its ``classes.json``: classes and their order) must be this run's, whatever
    ``--allow-different-folds`` says, as for `src.ensemble.check_classes`; a teacher folder without one (an
    ensemble's) is checked by its probability columns alone.

    Raises:
        ValueError: naming the teacher and the first difference (the class's position and its names).
    """
    theirs = share.run_classes(folder)
    difference = None if theirs is None else share.label_difference(task, theirs, ("here", f"in {teacher}"))
    if difference is not None:
        raise ValueError(f"--teacher {teacher}: its class list differs from this run's ({difference}); distil "
                         "from a run of the same classes in the same order")


def check_teacher_folds(frame, ids: list[str], fold_of: np.ndarray, path: Path, allowed: bool) -> None:
    """A teacher trained on other folds leaks: its soft targets of this run's training rows come from models that
    trained on this run's valid rows. Our own check, as `src.ensemble.check_folds` for blends.

    Raises:
        ValueError: rows whose fold differs (the count and the first ids), unless ``allowed`` (a warning).
    """
    if "fold" not in frame:
        return
    teacher_fold = dict(zip(frame["id"].astype(str).tolist(), frame["fold"].tolist()))
    differing = [i for i, fold in zip(ids, fold_of.tolist()) if i in teacher_fold and teacher_fold[i] != fold]
    if not differing:
        return
    shown = ", ".join(differing[:3]) + (", ..." if len(differing) > 3 else "")
    message = (
        f"--teacher {path}: its folds differ from this run's on {len(differing)} of {len(ids)} rows ({shown}); "
        "its soft targets would leak this run's valid rows: train on its folds (--folds-from the teacher's run), "
        "or pass --allow-different-folds"
    )
    if not allowed:
        raise ValueError(message)
    logger.warning("%s; the valid score is not comparable", message)


def test_set(config: Config, reading: Reading, task: Task) -> tuple[object, np.ndarray]:
    """``--teacher-test``: the test images and the teacher's softened test predictions as their targets.

    Raises:
        FileNotFoundError: no ``test_predictions.csv`` in the teacher folder, or no test table.
        ValueError: no ``--pseudo-test-csv``, teacher ids missing from the test table, or another label encoding
            (`check_teacher_classes`).
    """
    distill = config.distill
    if not config.pseudo.pseudo_test_csv:
        raise ValueError("--teacher-test needs --pseudo-test-csv (the test table the teacher predicted)")
    path = teacher_file(distill.teacher, rundir.TEST_PREDICTIONS, config.track.mlflow)
    check_teacher_classes(path.parent, task, distill.teacher)
    frame, probs, _ = read_predictions(path, task, with_targets=False)
    where = f"--teacher {path} against --pseudo-test-csv {config.pseudo.pseudo_test_csv}"
    images = test_images(config.pseudo, config.data, reading, frame["id"].astype(str).tolist(), where)
    logger.info("--teacher-test: %d test images join the training fold with the teacher's targets", len(frame))
    return images, soften(probs, task, distill.teacher_temperature)
