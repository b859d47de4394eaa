"""Team tracking on MLflow (``--mlflow URI``): params, metrics per epoch, the summary and, with
``--mlflow-artifacts``, the best checkpoint and the valid predictions.

The metrics go through ignite's `MLflowLogger` (one output handler per evaluator, the epoch's training loss and the
learning rate), which logs to MLflow's active run; this module opens that run and closes it with the run's status.
Each run folder is one MLflow run in the ``--mlflow-experiment`` experiment, named after the folder and tagged
with the command and the code's commit; its id is kept in the folder (``mlflow.json``), so a continued run logs
into the same MLflow run. A ``--fold all`` run adds one run for the cross-validation (params, fold scores, OOF
score, ``oof.csv``), and tags each fold's run with the folder of every fold (``cv_run``).

``URI``: a tracking server (``http://host:5000``), a database (``sqlite:///mlflow.db``) or a local folder
(``./mlruns``), which needs no server. mlflow is an optional dependency: without it ``--mlflow`` stops before
training with one line saying how to install it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import global_step_from_engine
from ignite.handlers.mlflow_logger import MLflowLogger

from src.config import Config
from src.tracking import notes, rundir
from src.tracking.report import status_of
from src.utils import files

logger = logging.getLogger(__name__)

STATUS = {"finished": "FINISHED", "stopped": "KILLED", "crashed": "FAILED"}


# MLflow's HTTP client retries 7 times with exponential backoff and waits 120 s for each answer: a dead tracking
# server held a command for minutes. Ours give up in seconds unless the user set these (`import_mlflow`).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def import_mlflow():
    """The mlflow module, with `HTTP_DEFAULTS` in the environment where the user has not set them: a tracking server
    that refuses connections fails a command in about 5 s (two retries, MLflow's backoff), one that does not answer
    in about a minute (20 s a try), instead of MLflow's minutes. Set MLFLOW_HTTP_REQUEST_MAX_RETRIES and
    MLFLOW_HTTP_REQUEST_TIMEOUT to wait longer, e.g. for large checkpoints through a slow artifact store (the server
    answers an upload once it has stored it). Training is not stopped by the store either way
    (`TolerantMLflowLogger`).

    Raises:
        ValueError: mlflow is not installed (the message says how to install it).
    """
    try:
        import mlflow
    except ImportError:
        raise ValueError("--mlflow needs the mlflow package: pip install mlflow (or leave --mlflow out)") from None
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return mlflow


def is_folder(uri: str) -> bool:
    """Whether ``--mlflow`` names a local folder rather than a tracking URI."""
    return "://" not in uri and not uri.startswith(("file:", "sqlite:", "databricks", "postgresql:", "mysql:"))


def tracking_uri(uri: str) -> str:
    """The tracking URI of ``--mlflow``: a local folder is an SQLite database in it (``<folder>/mlflow.db``; MLflow 3
    keeps its old file store in maintenance mode and refuses it by default); other URIs as they are."""
    if not is_folder(uri):
        return uri
    folder = Path(uri).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def experiment_id(mlflow, config: Config) -> str:
    """The id of the ``--mlflow-experiment`` experiment, created if new; with a local folder its artifacts go to
    ``<folder>/artifacts``.

    Raises:
        ValueError: the tracking store cannot be reached or opened (one line).
    """
    track = config.track
    try:
        mlflow.set_tracking_uri(tracking_uri(track.mlflow))
        found = mlflow.get_experiment_by_name(track.mlflow_experiment)
        if found is not None:
            return found.experiment_id
        location = (Path(track.mlflow).resolve() / "artifacts").as_uri() if is_folder(track.mlflow) else None
        return mlflow.create_experiment(track.mlflow_experiment, artifact_location=location)
    except Exception as error:  # noqa: BLE001 - MlflowException and the HTTP client's errors
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--mlflow {track.mlflow}: cannot use the tracking store: {first}") from None


def start_run(config: Config, run_dir: Path, tags: Mapping[str, str] | None = None) -> str:
    """Makes the run folder's MLflow run the active one: the run saved in ``mlflow.json`` (a continued run), or a
    new run named after the folder with the config's params. Returns its id.

    Raises:
        ValueError: mlflow is not installed, or the tracking store cannot be used.
    """
    mlflow = import_mlflow()
    track = config.track
    experiment = experiment_id(mlflow, config)
    saved = read_run_id(run_dir, track.mlflow)
    if saved is not None:
        return mlflow.start_run(run_id=saved).info.run_id
    run = mlflow.start_run(experiment_id=experiment, run_name=run_dir.name, tags=dict(tags or {}))
    mlflow.log_params(params(config))
    files.write_text(run_dir / rundir.MLFLOW_RUN, json.dumps({"tracking_uri": track.mlflow, "run_id": run.info.run_id}))
    return run.info.run_id


def read_run_id(run_dir: Path, uri: str) -> str | None:
    """The MLflow run id saved in the folder for this tracking URI, or None."""
    try:
        saved = json.loads((run_dir / rundir.MLFLOW_RUN).read_text())
    except (OSError, ValueError):
        return None
    return saved.get("run_id") if saved.get("tracking_uri") == uri else None


def params(config: Config) -> dict[str, str]:
    """Every setting but the tracking group's, as MLflow params (text)."""
    skip = set(Config().to_dict()["track"])
    flat = {k: v for k, v in config.flat().items() if k not in skip}
    return {k: json.dumps(v) if isinstance(v, list | dict) else str(v) for k, v in flat.items()}


def end_run(status: str, summary: Mapping[str, Any] | None = None, artifacts: list[Path] = ()) -> None:
    """Logs the summary's numbers and the artifacts to the active run and ends it with ``status`` (``finished``,
    ``stopped``, ``crashed``). A failure is logged, never raised: tracking must not break the run."""
    mlflow = import_mlflow()
    if mlflow.active_run() is None:
        return
    try:
        numbers = {k: v for k, v in (summary or {}).items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if numbers:
            mlflow.log_metrics({f"summary_{k}": float(v) for k, v in numbers.items()})
        for path in artifacts:
            if path.is_file():
                mlflow.log_artifact(str(path))
    except Exception as error:  # noqa: BLE001 - any failure of the tracking server
        logger.warning("MLflow: could not log the end of the run: %s", error)
    finally:
        mlflow.end_run(status=STATUS.get(status, "FAILED"))


def attach_mlflow(
    config: Config,
    trainer: Engine,
    evaluators: dict[str, Engine],
    optimizer: torch.optim.Optimizer,
    run_dir: Path,
    best: Callable[[], dict[str, float]],
) -> Callable[..., bool]:
    """Opens the run folder's MLflow run and logs, through ignite's `MLflowLogger`, the epoch's training loss and
    learning rates and every evaluator's metrics at each validation (at the trainer's epoch, or its iteration with
    ``--val-every``). Rank 0 only.

    Args:
        best: the best score so far and its epoch (``{"best_valid_accuracy": ..., "best_epoch": ...}``), logged
            when the run ends.

    Returns:
        The exit callback (for ``ExitStack.push``) that ends the MLflow run with the run's status, after logging
        ``best()`` and, with ``--mlflow-artifacts``, the best checkpoint and the valid predictions.
    """
    parent = run_dir.parent
    tags = {"commit": notes.git_state(), "run_dir": str(run_dir), "note": config.track.note or ""}
    if run_dir.name.startswith("fold") and rundir.config_path(parent).is_file():
        tags["cv_run"] = parent.name
    start_run(config, run_dir, tags)
    mlflow_logger = TolerantMLflowLogger()  # logs to the active run
    mlflow_logger.attach_output_handler(trainer, Events.EPOCH_COMPLETED, tag="train", metric_names=["loss"])
    mlflow_logger.attach_opt_params_handler(trainer, Events.EPOCH_STARTED, optimizer)
    event = Events.ITERATION_COMPLETED if config.eval.val_every is not None else Events.EPOCH_COMPLETED
    for name, evaluator in evaluators.items():
        global_step = global_step_from_engine(trainer, event)
        mlflow_logger.attach_output_handler(
            evaluator, Events.COMPLETED, tag=name, metric_names="all", global_step_transform=global_step
        )

    def finish(exc_type, error, tb) -> bool:
        artifacts = []
        if config.track.mlflow_artifacts and rundir.has_best_checkpoint(run_dir):
            artifacts = [run_dir / rundir.PREDICTIONS, rundir.best_checkpoint(run_dir)]
        end_run(status_of(error), best(), artifacts)
        return False

    return finish


class TolerantMLflowLogger(MLflowLogger):
    """ignite's `MLflowLogger` whose handlers log a failure (a tracking server gone mid-run) as a warning, once per
    handler, instead of stopping the training."""

    def attach(self, engine: Engine, log_handler: Callable, event_name, *args, **kwargs):
        warned = []

        def tolerant(engine: Engine, mlflow_logger, event) -> None:
            try:
                log_handler(engine, mlflow_logger, event)
            except Exception as error:  # noqa: BLE001 - any failure of the tracking store
                if not warned:
                    logger.warning("MLflow: could not log (%s); training goes on", error)
                    warned.append(error)

        return super().attach(engine, tolerant, event_name, *args, **kwargs)


def log_cv_run(config: Config, run_dir: Path, summary: Mapping[str, Any], tags: Mapping[str, str]) -> None:
    """The ``--fold all`` run: params, fold scores, mean, std and OOF score, and ``oof.csv`` with artifacts."""
    start_run(config, run_dir, tags)
    mlflow = import_mlflow()
    for fold, value in enumerate(summary.get("fold_scores", [])):
        mlflow.log_metric("fold_score", value, step=fold)
    artifacts = [run_dir / rundir.OOF] if config.track.mlflow_artifacts else []
    end_run("finished", {k: summary.get(k) for k in ("mean", "std", "oof_score", "oof_rows")}, artifacts)


# Sharing a finished run through the tracking store: `python -m src.runs push` and ``mlflow:<run-id>`` wherever a
# run folder is read (src.ensemble, src.predict --run).
