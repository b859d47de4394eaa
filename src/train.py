"""Train a classifier: ``python -m src.train --arch effnet-b0 [flags]`` (``--help`` lists the flags by group).

`run` trains one fold and reads top to bottom: the run's parts (`src.training.assembly.assemble`: data and folds,
loaders, the resolved config, model), the checks of a run folder that goes on (settings, files, checkpoint: a refused
command writes nothing), run folder, training objects, evaluators, handlers, resume, training, valid predictions,
summary. ``--fold all`` hands `run` to `src.training.cv`, which trains every fold with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine
from ignite.utils import manual_seed

from src.cli import INTERRUPTED, parse_config, run_cli
from src.config import Config, parse_duration
from src.loaddata import Data
from src.model import describe_archs
from src.tracking import mlflow_log, notes, rundir, share
from src.tracking.report import RunReport
from src.training.assembly import assemble, resolve_device
from src.training.batch_size import out_of_memory_message
from src.training.budget import Budget
from src.training.checkpoints import read_resumable
from src.training.cv import run_all_folds
from src.training.evaluation import setup_evaluators
from src.training.stopping import Stopped, StopRequests
from src.training.trainer import (
    Attached,
    Training,
    attach_handlers,
    resume,
    save_valid_predictions,
    setup_training,
    train,
)
from src.utils import distributed
from src.utils.distributed import launch
from src.utils.errors import is_out_of_memory

logger = logging.getLogger("src.train")  # not __name__: "__main__" under python -m


def run(
    config: Config,
    requests: StopRequests | None = None,
    started: Callable[[Path], None] | None = None,
    handlers: Callable[[Training, Engine], None] | None = None,
) -> dict[str, Any]:
    """Trains one fold as configured; returns the summary (best score and its epoch, wall time, run folder).

    Everything is read and checked before the first file is written: the config, the data, and a run folder that
    goes on (its settings, class list, folds, history and checkpoint; `src.tracking.rundir.check_continuation`,
    `src.tracking.rundir.check_data`, `src.training.checkpoints.read_resumable`), so a refused command leaves the
    folder as it was. ``started(run folder)`` (`src.tracking.report.RunReport`) is called once the folder is written.
    ``handlers(training, selecting evaluator)`` attaches a caller's own handlers after the run's (the sweep's pruner).

    Raises:
        Stopped: a signal or the time limit stopped it after saving the training state (``requests``).
    """
    started_at = time.perf_counter()
    requests = requests or StopRequests()
    resume_run = config.run.resume not in (None, "auto") and not config.run.restart
    resume_files = rundir.checkpoints(config.run.resume) if resume_run else None
    manual_seed(config.run.seed + distributed.rank())  # rank 0: --seed; DDP copies rank 0's initial weights
    parts = assemble(config, resolve_device(config.run.device))
    resolved, data, loaders = parts.config, parts.data, parts.loaders
    run_dir = rundir.locate(resolved)
    going_on = run_dir is not None and rundir.is_run(run_dir) and not config.run.restart
    changes = rundir.check_continuation(run_dir, resolved) if going_on else []
    if going_on:
        rundir.check_data(run_dir, data.task, data.source.ids(), parts.fold_of)
        resume_files = resume_files or (rundir.checkpoints(run_dir) if rundir.has_checkpoint(run_dir) else None)
    checkpoint = read_resumable(resume_files, parts.model, parts.steps.epoch_length) if resume_files else None
    if run_dir is not None:  # the first write
        open_run(run_dir, changes if going_on else None, resolved, data, parts.fold_of)
        if started is not None:
            started(run_dir)
    training = setup_training(resolved, parts.model, data.task, parts.steps, parts.device)
    evaluators = setup_evaluators(resolved, training.models(), data.task, parts.device)
    with contextlib.ExitStack() as cleanup:  # closes TensorBoard's writer and the loaders' workers
        cleanup.callback(loaders.close)
        attached = attach_handlers(resolved, training, evaluators, loaders, run_dir, cleanup, requests)
        if handlers is not None:
            handlers(training, evaluators[training.selection.name])
        if checkpoint is not None:
            resume(training, attached, *checkpoint, loaders.train.sampler)
        where = "dry run (no files written)" if run_dir is None else f"run folder {run_dir}"
        sizes = len(loaders.train.dataset), len(loaders.valid_rows)  # all processes' rows
        logger.info("%s on %s: %d train / %d valid images, %s", resolved.model.arch, parts.device, *sizes, where)
        try:
            train(training, loaders.train, resolved.optim.epochs)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            raise ValueError(out_of_memory_message(resolved)) from None
        if getattr(training.trainer.state, "stopped", None):
            raise training.trainer.state.stopped
        predicted_by = save_valid_predictions(run_dir, parts, training, attached) if run_dir else None
    summary = summarise(attached, training, time.perf_counter() - started_at, run_dir, predicted_by)
    if run_dir is not None:  # marks the run as finished (`--fold all` skips finished folds)
        rundir.write_summary(run_dir, summary)
    return summary


def open_run(run_dir: Path, changes: list[str] | None, config: Config, data: Data, fold_of: np.ndarray) -> None:
    """The run's first write, once every check has passed: a run that goes on (``changes``: its changed settings,
    `src.tracking.rundir.go_on`) rewrites nothing; a new one writes its config, class list and folds."""
    if changes is not None:
        rundir.go_on(run_dir, changes)
        return
    rundir.start(run_dir, config)
    rundir.write_data(run_dir, data.task, data.source.ids(), fold_of)


def summarise(
    attached: Attached, training: Training, wall_time: float, run_dir: Path | None, predicted_by: Path | None
) -> dict[str, Any]:
    """The run's summary (``summary.json``), logged and printed in one line."""
    key, early_stopping, history = training.selection.key, attached.early_stopping, attached.history
    best = history.best(key, training.selection.higher_is_better) or {}
    stopped_early = early_stopping is not None and early_stopping.counter >= early_stopping.patience
    summary = {
        "best_valid_score": best.get(key),
        "best_epoch": best.get("epoch"),
        "selected_by": key,
        "epochs_run": training.trainer.state.epoch,
        "stopped_early_at_epoch": training.trainer.state.epoch if stopped_early else None,
        "wall_time_s": round(wall_time, 1),
        "train_images_per_s": round(history.mean("train_images_per_s"), 1),
        "train_images_per_s_steady": round(history.mean("train_images_per_s_steady"), 1),  # no start-up, evaluation
        "run_dir": str(run_dir) if run_dir else None,
        "predictions_from": predicted_by.name if predicted_by else None,  # the checkpoint behind valid_predictions
    }
    logger.info("summary: %s", json.dumps(summary))
    if distributed.is_main():
        print(
            f"best {key.replace('_', ' ')} {summary['best_valid_score']} at epoch {summary['best_epoch']} "
            f"({summary['epochs_run']} epochs, {summary['wall_time_s']} s, {summary['train_images_per_s']} train "
            f"images/s, {summary['train_images_per_s_steady']} steady); "
            f"run folder: {summary['run_dir'] or 'none (dry run)'}"
        )
    return summary


@dataclasses.dataclass(frozen=True)
class Extras:
    """What a caller that runs training commands adds to them (`src.sweep`'s trials).

    Attributes:
        handlers: ``handlers(training, selecting evaluator)`` attached after the run's own (the trial's pruner).
        folds: with ``--fold all``, train only the first ``folds`` folds (the OOF score covers those).
    """

    handlers: Callable[[Training, Engine], None] | None = None
    folds: int | None = None


def command(config: Config, argv: Sequence[str], extras: Extras = Extras()) -> dict[str, Any] | None:
    """``--list-archs``, every fold (``--fold all``), or one fold (a dry run of ``--fold all`` checks fold 0), with
    signals and ``--time-limit`` turned into clean stops (`src.training.stopping`) and the end reported
    (`src.tracking.report`: the run's status, the notes log, notifications). Returns the run's summary (the
    cross-validation summary with ``--fold all``), or None for ``--list-archs``.

    Raises:
        Stopped: with the command line that continues the run.
    """
    if config.run.list_archs:
        print("\n".join(describe_archs()))
        return None
    epochs_for = planner(config, extras.folds)  # before anything starts: a budget needs --fold all
    report = RunReport(config, command_line(argv))
    with StopRequests(config.run.time_limit_s, config.run.time_limit) as requests, report:
        try:
            if config.split.fold == "all" and not config.run.dry_run:
                # the report is of the folder of every fold
                train_fold = functools.partial(run, requests=requests, handlers=extras.handlers)
                report.summary = run_all_folds(config, train_fold, requests.check_between, epochs_for, report.started)
                if config.track.mlflow and distributed.is_main():
                    run_dir = Path(report.summary["run_dir"])
                    mlflow_log.log_cv_run(config, run_dir, report.summary, {"commit": notes.git_state()})
            else:
                one = config.replace(fold=0) if config.split.fold == "all" else config
                report.summary = run(one, requests, report.started, extras.handlers)
            if config.track.mlflow and distributed.is_main() and report.summary.get("run_dir"):
                share.push_after_training(Path(report.summary["run_dir"]), config.track.mlflow,
                                          config.track.mlflow_artifacts)
        except Stopped as stopped:
            every_fold = config.split.fold == "all" and stopped.run_dir is not None and stopped.position is not None
            run_dir = stopped.run_dir.parent if every_fold else stopped.run_dir
            stopped.command = continue_command(argv, run_dir)
            raise
    return report.summary


def planner(config: Config, folds: int | None = None) -> Callable[[int, Path], int | None] | None:
    """``--time-budget``'s epochs per fold (`src.training.budget.Budget.epochs_for`), or None without a budget;
    with ``folds``, the folds from that one on are left out.

    Raises:
        ValueError: a budget without ``--fold all``.
    """
    if config.run.time_budget is not None and config.split.fold != "all":
        raise ValueError(f"--time-budget {config.run.time_budget} plans the folds of --fold all; use --time-limit")
    trained = min(folds or config.split.folds, config.split.folds)
    if config.run.time_budget is not None:
        budget = Budget(parse_duration(config.run.time_budget), trained, config.optim.epochs).epochs_for
    elif folds is None:
        return None
    else:
        budget = None

    def epochs_for(fold: int, run_dir: Path) -> int | None:
        if fold >= trained:
            return None
        return budget(fold, run_dir) if budget is not None else config.optim.epochs

    return epochs_for


def continue_command(argv: Sequence[str], run_dir: Path | None) -> str:
    """The command line that continues a stopped run: the same one without ``--restart`` (which would train it
    over), naming the run folder if it did not."""
    args = [a for a in argv if a != "--restart"]
    if run_dir is not None and not any(a.split("=")[0] in ("--run-name", "--resume") for a in args):
        args += ["--run-name", run_dir.name]
    return command_line(args)


def command_line(argv: Sequence[str]) -> str:
    """The training command with these arguments, as typed: ``python -m src.train ...`` or under ``torchrun``."""
    per_node = os.environ.get("LOCAL_WORLD_SIZE", str(distributed.launched_processes()))
    launcher = f"torchrun --nproc_per_node {per_node} " if distributed.launched_processes() > 1 else "python "
    return launcher + "-m src.train " + shlex.join(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Under ``torchrun`` every process runs `command`, in one process group (`src.utils.distributed.launch`)."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def parse_and_launch() -> None:
        config = parse_config(argv)
        launch(command, config.run.device, config, argv)

    return run_cli(parse_and_launch, interrupted=INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
