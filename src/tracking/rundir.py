"""The run folder: every file name in it, and the functions that create, find and read those files.

``experiments/<run>/`` of one fold (``--fold all`` puts one such folder per fold in ``fold<k>/`` and its own files
beside them). A new run writes ``config.yaml``, ``classes.json`` and ``folds.csv`` once (`start`, `write_data`); a
command that goes on with a run checks them, its history and its checkpoint before writing anything
(`check_continuation`, `check_data`) and never rewrites them (`go_on`), and ``--restart`` moves a run aside
(`move_aside`). A damaged run folder is refused, naming the file and what is wrong, never taken for no run.

| file | written by | what |
| --- | --- | --- |
| ``config.yaml`` | train, cv | the resolved config (`src.config.save_config`) |
| ``classes.json`` | train | the task: kind, label columns, class lists, head weights |
| ``folds.csv`` | train | id and fold of every row |
| ``history.csv`` | train (`src.tracking.history`) | one row per epoch |
| ``checkpoint_<iteration>.pt`` | train (`src.training.checkpoints`) | the two newest full training states |
| ``best_model_<epoch or iteration>_<key>=<score>.pt`` | train | the ``--n-saved`` best model weights |
| ``swa_model_<epoch>.pt`` | train | the SWA weights (``--swa-start-epoch``) |
| ``valid_predictions.csv``, ``summary.json`` | train | the valid fold's probabilities; the summary, written last |
| ``status.json`` | train, cv (`src.tracking.report`) | running (process, host), finished, stopped or crashed; the
command |
| ``mlflow.json`` | train, cv (`src.tracking.mlflow_log`) | the MLflow tracking URI and run id (``--mlflow``) |
| ``events.out.tfevents.*`` | train (`src.training.handlers`, `src.tracking.pictures`) | TensorBoard: scalars,
pictures, hparams |
| ``oof.csv``, ``cv_summary.json`` | cv | every row's out-of-fold probabilities; the CV scores |
| ``test_predictions.csv``, ``submission.csv`` | predict, ensemble | test probabilities; the submission |
| ``ensemble.json`` | ensemble | the blend's weights and scores |
| ``lr_find.csv``, ``lr_find.png`` | lr_find (its own folder) | the lr range test |
| ``share_manifest.json`` | a run pulled as ``mlflow:<run-id>`` (`src.tracking.share.resolve_run`) | every
shared file's size and sha256, as ``src.runs push`` uploaded it |
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config import (
    EXPERIMENT,
    FOLDER_FIELDS,
    INFERRED,
    OLD_RUN_DEFAULTS,
    RESUMABLE,
    Config,
    load_config_file,
    save_config,
)
from src.targets import Task
from src.tracking import history
from src.utils import distributed, files

CONFIG = "config.yaml"
CLASSES = "classes.json"
FOLDS = "folds.csv"
HISTORY = "history.csv"
SUMMARY = "summary.json"
STATUS = "status.json"
MLFLOW_RUN = "mlflow.json"
SHARE_MANIFEST = "share_manifest.json"  # what `python -m src.runs push` uploaded: relative path -> size, sha256
SHARE_RECEIPT = "share_push.json"  # what a push of the folder has uploaded so far, kept locally: a push resumes
PREDICTIONS = "valid_predictions.csv"
OOF = "oof.csv"
CV_SUMMARY = "cv_summary.json"
TEST_PREDICTIONS = "test_predictions.csv"
SUBMISSION = "submission.csv"
ENSEMBLE = "ensemble.json"
LR_FIND_CSV = "lr_find.csv"
LR_FIND_PLOT = "lr_find.png"
BEST_PREFIX = "best"  # ignite's Checkpoint names its files <prefix>_model_<global_step>_<score name>=<score>.pt
SWA_PREFIX = "swa"
CHECKPOINTS = "checkpoint_*.pt"
BEST_MODELS = "best_model_*.pt"
logger = logging.getLogger(__name__)


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG


def resolve_run_dir(resume: str | Path) -> Path:
    """The run folder of a ``--resume`` value: the folder itself or a checkpoint file's parent."""
    path = Path(resume)
    return path.parent if path.is_file() else path


RESTART = "or pass --restart to train the run over (its files are moved aside, nothing is deleted)"


def _changed(saved: Config, config: Config) -> list[tuple[str, Any, Any]]:
    """The fields whose values differ, as (name, saved value, this value), but for `src.config.FOLDER_FIELDS` and an
    inferred field (`src.config.INFERRED`) left unresolved on one side (as in ``--fold all``'s own config)."""
    old, new = saved.flat(), config.flat()
    unresolved = {k for k in INFERRED if old[k] is None or new.get(k) is None}
    return [(k, old[k], new.get(k)) for k in old if k not in FOLDER_FIELDS | unresolved and old[k] != new.get(k)]


def differences(saved: Config, config: Config) -> list[str]:
    """The fields, other than `src.config.RESUMABLE`, whose values differ: ``"lr: 0.001 there, 0.01 here"`` (an
    inferred field left unresolved on one side, as in ``--fold all``'s own config, is not a difference)."""
    return [f"{k}: {old!r} there, {new!r} here" for k, old, new in _changed(saved, config) if k not in RESUMABLE]


def changed_settings(config: Config) -> dict[str, Any]:
    """The settings of `src.config.EXPERIMENT` that differ from the defaults, by flat name: what makes this run
    another experiment (the notes log, TensorBoard's hparams, run tables)."""
    default = Config().flat()
    return {k: v for k, v in config.flat().items() if k in EXPERIMENT and v != default[k]}


def locate(config: Config) -> Path | None:
    """The folder a single-fold run writes to, found without writing anything; None for a dry run.

    Which folder: ``--resume``'s; with ``--resume auto`` the newest unfinished run in ``--output-dir`` with the same
    settings (`continuable`), else a new one; otherwise ``--output-dir/--run-name`` (by default
    ``<arch>-fold<fold>-<timestamp>``). A folder of that name that holds a run (`is_run`) is continued: see
    `check_continuation`.
    """
    if config.run.dry_run:
        return None
    if config.run.resume and config.run.resume != "auto":
        return resolve_run_dir(config.run.resume)
    found = continuable(config) if config.run.resume == "auto" and not config.run.restart else None
    if found is not None:
        return found
    name = config.run.run_name or f"{config.model.arch}-fold{config.split.fold}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path(config.run.output_dir) / distributed.broadcast_str(name)  # one name for all processes


RUN_FILES = (CONFIG, CLASSES, FOLDS, HISTORY, SUMMARY, STATUS, CHECKPOINTS, BEST_MODELS, OOF, CV_SUMMARY, "fold[0-9]*")


def is_run(folder: Path) -> bool:
    """Whether ``folder`` holds any file a training run (one fold or ``--fold all``) writes, a damaged run folder
    included: such a folder is only ever continued, or moved aside by ``--restart``."""
    return Path(folder).is_dir() and any(next(Path(folder).glob(name), None) for name in RUN_FILES)


def check_continuation(run_dir: Path, config: Config) -> list[str]:
    """Checks, before anything is written, that ``config`` may continue the run in ``run_dir``: its config.yaml
    is whole and holds the same settings but for those a continued run may change (`src.config.RESUMABLE`: fields
    declared not to train, and ``epochs``).

    Returns:
        The `src.config.RESUMABLE` settings this command changes, ``epochs 18 -> 30`` (nothing of the run is
        rewritten).

    Raises:
        FileNotFoundError: the folder holds a run's files but no ``config.yaml``.
        ValueError: a damaged ``config.yaml`` (cut short, not YAML, a value of the wrong type), or other settings
            (each named with its value there and here).
    """
    if not config_path(run_dir).is_file():
        raise FileNotFoundError(f"{run_dir}: no {CONFIG}; is it a run folder of src.train? Pass another --run-name, "
                                + RESTART)
    saved = read_saved_config(run_dir)
    changed = _changed(saved, config)
    refused = [(k, old, new) for k, old, new in changed if k not in RESUMABLE]
    if refused and config.run.resume:
        shown = "; ".join(f"{k} {old!r} -> {new!r}" for k, old, new in refused)
        raise ValueError(
            f"--resume {run_dir}: the run cannot go on with other settings ({shown}); drop those flags to continue "
            f"it as it started, or train a new run (another --run-name)"
        )
    if refused:
        shown = "; ".join(f"{k}: {old!r} there, {new!r} here" for k, old, new in refused)
        raise ValueError(
            f"run folder {run_dir} holds a run with other settings ({shown}); pass another --run-name, or --resume "
            f"{run_dir} to continue it with its own settings"
        )
    return [f"{k} {old!r} -> {new!r}" for k, old, new in changed]


def check_data(run_dir: Path, task: Task, ids: Sequence[str], fold_of: np.ndarray) -> None:
    """Checks, before anything is written, that the run in ``run_dir`` can go on with this data: its
    ``classes.json`` and ``folds.csv`` hold the same task and split (a run that has saved weights must have them),
    and its ``history.csv`` reads (`src.tracking.history.read_rows`).

    Raises:
        ValueError: a file missing, damaged, or describing other data (naming the file and what differs).
    """
    trained = has_checkpoint(run_dir) or has_best_checkpoint(run_dir)
    classes, folds = Path(run_dir) / CLASSES, Path(run_dir) / FOLDS
    for path in (classes, folds):
        if trained and not path.is_file():
            raise ValueError(f"{path}: missing from a run that has saved weights (a damaged run folder); restore it, "
                             + RESTART)
    if classes.is_file():
        try:
            saved = Task.from_dict(json.loads(classes.read_text()))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{classes}: not a class list of src.train ({error}); restore it, {RESTART}") from None
        if saved != task:
            raise ValueError(
                f"{classes}: the run learns other classes than this data has ({_task_difference(saved, task)}); "
                "continue it on its own data, or train a new run (another --run-name)"
            )
    if folds.is_file():
        _check_folds(folds, ids, fold_of)
    if (Path(run_dir) / HISTORY).is_file():
        history.read_rows(Path(run_dir) / HISTORY)


def _task_difference(saved: Task, task: Task) -> str:
    there, here = saved.to_dict(), task.to_dict()
    key = next((k for k in there if there[k] != here.get(k)), "kind")
    return f"{key}: {_shorten(there.get(key))} there, {_shorten(here.get(key))} here"


def _shorten(value: Any, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_folds(path: Path, ids: Sequence[str], fold_of: np.ndarray) -> None:
    """``folds.csv`` against this command's rows and folds.

    Raises:
        ValueError: unreadable, or another split (the first row that differs).
    """
    try:
        saved = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
        saved_ids, saved_folds = saved["id"].tolist(), saved["fold"].astype(int).to_numpy()
    except (ValueError, KeyError, pd.errors.ParserError) as error:
        raise ValueError(f"{path}: not a fold list of src.train ({error}); restore it, {RESTART}") from None
    if len(saved_ids) != len(ids):
        raise ValueError(
            f"{path}: the run was split over {len(saved_ids)} rows, this data has {len(ids)}; continue it on its own "
            "data, or train a new run (another --run-name)"
        )
    row = next((i for i in range(len(ids)) if saved_ids[i] != ids[i] or saved_folds[i] != fold_of[i]), None)
    if row is not None:
        raise ValueError(
            f"{path}: the run's split differs from this command's at row {row + 1} (id {saved_ids[row]} in fold "
            f"{saved_folds[row]} there, id {ids[row]} in fold {fold_of[row]} here); continue it on its own data "
            "and split, or train a new run (another --run-name)"
        )


def start(run_dir: Path, config: Config) -> None:
    """Makes a new run's folder and saves its ``config.yaml``; rank 0. With ``--restart`` the files of the run there
    are first moved aside (`move_aside`)."""
    distributed.barrier()  # every process has looked before rank 0 writes
    if not distributed.is_main():
        return
    if config.run.restart:
        move_aside(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)


def write_data(run_dir: Path, task: Task, ids: Sequence[str], fold_of: np.ndarray) -> None:
    """Writes a new run's ``classes.json`` (the task; used by prediction) and ``folds.csv`` (id and fold of every
    row); rank 0."""
    if distributed.is_main():
        files.write_text(run_dir / CLASSES, json.dumps(task.to_dict(), indent=1))
        files.write_csv(pd.DataFrame({"id": ids, "fold": fold_of}), run_dir / FOLDS)


def go_on(run_dir: Path, changes: Sequence[str]) -> None:
    """A run continued: names the settings this command changes (`check_continuation`) in one line, and removes
    the temporary files its interrupted writes left (`src.utils.files.remove_leftovers`), saying how much; rank 0.
    Nothing else of the folder is rewritten: its config, class list, folds and checkpoints stay as they are."""
    if not distributed.is_main():
        return
    if changes:
        logger.info("continuing %s with changed settings: %s", run_dir, ", ".join(changes))
    count, size = files.remove_leftovers(run_dir)
    if count:
        what = f"{count} temporary file{'s' * (count != 1)}"
        logger.info("removed %s of interrupted writes from %s (%s)", what, run_dir, files.format_size(size))


def move_aside(run_dir: Path) -> Path | None:
    """``--restart``: renames a non-empty ``run_dir`` to ``<run>.before-restart-<timestamp>`` beside it (nothing is
    deleted) and returns the new name; None when there was nothing to move."""
    if not Path(run_dir).is_dir() or not any(Path(run_dir).iterdir()):
        return None
    aside = Path(run_dir).with_name(f"{Path(run_dir).name}.before-restart-{datetime.now():%Y%m%d-%H%M%S}")
    Path(run_dir).rename(aside)
    logger.info("--restart: moved the earlier files of %s to %s", run_dir, aside)
    return aside


def continuable(config: Config) -> Path | None:
    """``--resume auto``: the unfinished run folder in ``--output-dir`` with checkpoints and the same settings (but
    for `src.config.RESUMABLE`) whose newest checkpoint is the newest, or None (the same in every process).

    Raises:
        ValueError: a damaged run folder there (its config.yaml cut short or unreadable).
    """
    found = ""
    if distributed.is_main():
        runs = [p for p in Path(config.run.output_dir).glob("*/") if has_checkpoint(p) and not is_finished(p)]
        runs = [p for p in runs if config_path(p).is_file() and not differences(read_saved_config(p), config)]
        newest = max(runs, key=lambda p: checkpoints(p)[0].stat().st_mtime, default=None)
        found = str(newest or "")
    found = distributed.broadcast_str(found)
    return Path(found) if found else None


def write_config(run_dir: Path, config: Config) -> None:
    """Saves ``config.yaml`` with the fields that name the folder (`src.config.FOLDER_FIELDS`) at their defaults, so
    ``--config <run>/config.yaml`` repeats the run in a new folder."""
    default = Config().flat()
    save_config(config.replace(**{name: default[name] for name in FOLDER_FIELDS}), config_path(run_dir))


def read_config(run_dir: Path) -> Config:
    """The run's saved config (flat keys of older runs included; keys it lacks whose default changed since take
    the value it trained with, `src.config.OLD_RUN_DEFAULTS`).

    Raises:
        FileNotFoundError: no ``config.yaml``.
        ValueError: a damaged ``config.yaml``: not YAML, cut short, a value of the wrong type.
    """
    if not config_path(run_dir).is_file():
        raise FileNotFoundError(f"{run_dir}: no {CONFIG}; is it a run folder of src.train?")
    return load_config_file(config_path(run_dir), missing=OLD_RUN_DEFAULTS, saved=True)


def read_saved_config(run_dir: Path) -> Config:
    """`read_config` for a command that would continue the run: a damaged file's message says how to go on.

    Raises:
        FileNotFoundError, ValueError: as `read_config`.
    """
    try:
        return read_config(run_dir)
    except ValueError as error:
        raise ValueError(f"{error}; restore the file, {RESTART}") from None


def read_task(run_dir: Path) -> Task:
    """The task saved in ``classes.json``.

    Raises:
        FileNotFoundError: no ``classes.json``.
    """
    path = Path(run_dir) / CLASSES
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CLASSES}; is it a run folder of src.train?")
    return Task.from_dict(json.loads(path.read_text()))


def write_summary(run_dir: Path, summary: dict) -> None:
    """Writes ``summary.json``, which marks the run as finished (`is_finished`); rank 0."""
    if not distributed.is_main():
        return
    files.write_text(run_dir / SUMMARY, json.dumps(summary, indent=1))


def write_status(run_dir: Path, status: dict) -> None:
    """Writes ``status.json`` (`src.tracking.report.RunReport` keeps it: running, finished, stopped, crashed); rank
    0."""
    if distributed.is_main():
        files.write_text(Path(run_dir) / STATUS, json.dumps(status, indent=1))


def read_status(run_dir: Path) -> dict:
    """The run's ``status.json``, or ``{}`` when it has none (runs from before it existed) or it is unreadable."""
    try:
        status = json.loads((Path(run_dir) / STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def read_summary(run_dir: Path) -> dict:
    """The run's ``summary.json`` (one fold) or ``cv_summary.json`` (``--fold all``), or ``{}``."""
    for name in (CV_SUMMARY, SUMMARY):
        with contextlib.suppress(OSError, ValueError):
            return json.loads((Path(run_dir) / name).read_text())
    return {}


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / SUMMARY).is_file()


def global_step_of(path: Path) -> int:
    """The global step (ignite's term: the epoch or the iteration) a checkpoint's file name ends with:
    ``checkpoint_1200.pt`` -> 1200."""
    return int(re.findall(r"\d+", path.stem)[-1])


def checkpoints(resume: str | Path) -> list[Path]:
    """The checkpoints to resume from, newest first: the file itself, or the ``checkpoint_<iteration>.pt`` files
    of a run folder.

    Raises:
        FileNotFoundError: no such file, or a folder without checkpoints.
    """
    path = Path(resume)
    if path.is_file():
        return [path]
    candidates = sorted(path.glob(CHECKPOINTS), key=global_step_of, reverse=True) if path.is_dir() else []
    if not candidates:
        raise FileNotFoundError(f"--resume {resume}: no checkpoint file, nor a run folder holding checkpoint_*.pt")
    return candidates


def find_checkpoint(resume: str | Path) -> Path:
    """The newest of `checkpoints`.

    Raises:
        FileNotFoundError: as `checkpoints`.
    """
    return checkpoints(resume)[0]


def has_checkpoint(run_dir: Path) -> bool:
    return any(Path(run_dir).glob(CHECKPOINTS))


def has_best_checkpoint(run_dir: Path) -> bool:
    return any(Path(run_dir).glob(BEST_MODELS))


def best_checkpoint(run_dir: Path) -> Path:
    """The ``best_model_*.pt`` of ``run_dir`` with the highest score (ignite writes lower-is-better ones negated).

    Raises:
        FileNotFoundError: the folder has none.
    """
    candidates = list(Path(run_dir).glob(BEST_MODELS))
    if not candidates:
        raise FileNotFoundError(f"{run_dir}: no best_model_*.pt checkpoint; train the run (to its first epoch) first")
    return max(candidates, key=lambda p: float(re.sub(r"\.pt$", "", p.name).rsplit("=", 1)[-1]))


def cv_run_dir(config: Config) -> Path:
    """The parent folder of an all-folds run: ``--resume``'s folder, ``--output-dir/--run-name``, or a new
    ``<arch>-folds<K>-<timestamp>``."""
    if config.run.resume:
        return Path(config.run.resume)
    name = config.run.run_name or f"{config.model.arch}-folds{config.split.folds}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path(config.run.output_dir) / distributed.broadcast_str(name)


def fold_dir(run_dir: Path, fold: int) -> Path:
    """The sub-folder ``fold<k>`` of an all-folds run."""
    return Path(run_dir) / f"fold{fold}"


def fold_dirs(run: Path) -> list[Path]:
    """The fold runs of a folder: its ``fold<k>/`` sub-folders in fold order, or the folder itself."""
    return sorted(Path(run).glob("fold[0-9]*"), key=lambda p: int(p.name[4:])) or [Path(run)]


def lr_find_dir(config: Config) -> Path:
    """Where the lr range test writes: ``<output-dir>/<run-name or lr_find-<arch>>``."""
    return Path(config.run.output_dir) / (config.run.run_name or f"lr_find-{config.model.arch}")


@dataclasses.dataclass
class FoldRun:
    """One trained fold: its folder, saved config, task and best checkpoint."""

    run_dir: Path
    config: Config
    task: Task
    checkpoint: Path


def read_fold_runs(run: str | Path) -> list[FoldRun]:
    """The trained folds of a run folder (``fold<k>/`` sub-folders of a ``--fold all`` run, or the folder itself).

    Raises:
        FileNotFoundError: no such folder, or a fold without its config, class list or best checkpoint.
        ValueError: folds with different class lists.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"--run {run}: no such run folder")
    folds = [FoldRun(d, read_config(d), read_task(d), best_checkpoint(d)) for d in fold_dirs(run)]
    if any(f.task != folds[0].task for f in folds):
        raise ValueError(f"--run {run}: the folds have different class lists")
    return folds


def first_file(run: Path, name: str) -> Path | None:
    """The first ``name`` in ``run`` or its fold sub-folders (a run's config or class list), or None."""
    return next(iter(sorted(Path(run).glob(f"**/{name}"))), None)
