"""The table of runs: ``python -m src.runs [experiments/ ...] [--sort best] [--format table|markdown|csv]`` and
``python -m src.runs --diff runA runB``.

One row per run folder (a folder with ``config.yaml``; a ``--fold all`` run is one row): name, status (running,
finished, stopped, crashed; `src.tracking.report`), arch, the settings that differ between the listed runs, the
selecting metric, its best value and epoch (the mean over the folds for ``--fold all``), the OOF score, epochs, wall
time, training images/s and the public score of its latest Kaggle submission (`src.kaggle.submit`). The columns come
from each run's own files (``status.json``, ``summary.json`` or ``cv_summary.json``, ``history.csv``,
``config.yaml``, ``kaggle_submissions.csv``), so a run still training shows its best so far.

A run whose ``status.json`` says ``running`` but whose process is gone from this machine was killed outright
(SIGKILL, the OOM killer): it is shown as ``crashed``. A run from before ``status.json`` existed is ``finished``
with a summary and ``unknown`` without.

``python -m src.runs push RUN --mlflow URI [--with-checkpoints]`` shares a finished run with the team: its files
(config, classes, folds, histories, summaries, OOF, valid and test predictions, with ``--with-checkpoints`` the
best checkpoints) go to its MLflow run, and teammates pass ``mlflow:<run-id>`` where a run folder is read
(`src.tracking.share.push`, `resolve_run`); a ``--mlflow`` training run pushes itself when it ends.

``python -m src.runs --mlflow URI [--experiment E] [--user U] [FOLDER ...]`` is the team's table: the store's
shared runs (``mlflow:<run-id>``, `src.tracking.share.shared_runs`) beside the local runs, with who ran each, when,
a fingerprint of its folds (``folds``: runs with the same one were scored on the same folds) and one of its label
encoding (``classes``: the same classes in the same order; `src.ensemble` and ``--teacher`` refuse others).
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import json
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import tyro

from src.cli import parse_args, run_cli
from src.kaggle.submit import latest_public_score
from src.tracking import rundir, share
from src.tracking.history import History
from src.training.evaluation import Selection
from src.utils import processes

FIXED = ["run", "status", "arch"]
TEAM = ["user", "date", "folds", "classes"]
RESULTS = ["metric", "best", "best_epoch", "oof", "epochs_run", "wall_time", "images_per_s", "public_score"]


@dataclasses.dataclass
class RunsConfig:
    """List and compare the runs in folders of runs (`python -m src.runs push RUN --mlflow URI` shares a run with the
    team)."""

    folders: Annotated[list[str], tyro.conf.Positional, tyro.conf.arg(metavar="[FOLDER ...]")] = (
        dataclasses.field(default_factory=lambda: ["experiments"])
    )
    """Folders holding run folders (the training --output-dir)."""
    sort: str = "run"
    """The column to sort by (any column of the table)."""
    descending: bool = False
    """Sort from the largest value (the best score first: --sort best --descending)."""
    format: Literal["table", "markdown", "csv"] = "table"
    """An aligned terminal table, a Markdown table or CSV."""
    diff: tuple[str, str] | None = None
    """Two runs (folders, names in the folders, or mlflow:<run-id>) to compare: settings that differ and the score
    difference."""
    mlflow: str | None = None
    """The team's table: the shared runs of this tracking store (a server, a database or a local folder) beside the
    local runs (the folders given; experiments/ if it exists)."""
    experiment: str | None = None
    """With --mlflow: only this experiment's runs (default: every experiment's)."""
    user: str | None = None
    """With --mlflow: only this user's runs (MLflow's mlflow.user tag)."""


@dataclasses.dataclass
class PushConfig:
    """Share a run with the team: upload its files to its MLflow run (teammates then pass mlflow:<run-id> to
    src.ensemble and src.predict --run)."""

    run: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """The run folder (a --fold all run with its fold<k>/ sub-folders, or one fold's run)."""
    mlflow: str
    """The tracking store: a server (http://host:5000), a database (sqlite:///mlflow.db) or a local folder. The run
    the folder's --mlflow training recorded for this store is reused, else a new one is made."""
    with_checkpoints: bool = False
    """Upload the best checkpoints too (best_model_*.pt; needed to predict a test set with the run)."""


def push(config: PushConfig) -> str:
    """Uploads the run and prints the line a teammate uses; returns its run id."""
    public = latest_public_score(Path(config.run))
    tags = {share.PUBLIC_TAG: str(public)} if public is not None else None
    run_id = share.push(Path(config.run), config.mlflow, config.with_checkpoints, tags)
    print(f"pushed {config.run} to {config.mlflow}: use it as mlflow:{run_id}")
    return run_id


def find_runs(folders: Sequence[str | Path]) -> list[Path]:
    """The run folders directly inside ``folders`` (each holding ``config.yaml``), sorted by name.

    Raises:
        FileNotFoundError: a folder that does not exist.
    """
    runs = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder of runs")
        runs += [p for p in folder.iterdir() if rundir.config_path(p).is_file()]
    return sorted(runs)


def status(run_dir: Path) -> str:
    """``running``, ``finished``, ``stopped``, ``pruned`` (a sweep's trial), ``crashed`` or ``unknown`` (see the module
    doc)."""
    recorded = rundir.read_status(run_dir)
    state = recorded.get("status")
    if state == "running" and recorded.get("host") == socket.gethostname() and not processes.alive(recorded.get("pid")):
        return "crashed"
    if state:
        return state
    return "finished" if rundir.read_summary(run_dir) else "unknown"


def results(run_dir: Path) -> dict[str, Any]:
    """The result columns of one run folder (`RESULTS`), from its summary and its folds' histories (`History`)."""
    config = rundir.read_config(run_dir)
    selection = Selection.of(config)
    folds = [d for d in rundir.fold_dirs(run_dir) if (d / rundir.HISTORY).is_file()]
    bests, epochs, wall, speeds = [], 0, 0.0, []
    for fold in folds:
        history = History(fold / rundir.HISTORY)  # reads the rows back
        columns = history.rows[0] if history.rows else {}
        if selection.key in columns:
            best = history.best(selection.key, selection.higher_is_better)
            bests.append((best[selection.key], best["epoch"]))
        epochs += len(history.rows)
        wall += rundir.read_summary(fold).get("wall_time_s") or sum(r.get("epoch_time_s") or 0 for r in history.rows)
        if "train_images_per_s" in columns:
            speeds.append(history.mean("train_images_per_s"))
    cv = rundir.read_summary(run_dir) if len(folds) > 1 or config.split.fold == "all" else {}
    return {
        "metric": selection.key,
        "best": round(sum(b for b, _ in bests) / len(bests), 6) if bests else None,
        "best_epoch": bests[0][1] if len(bests) == 1 else None,
        "oof": cv.get("oof_score"),
        "epochs_run": epochs,
        "wall_time": round(wall, 1),
        "images_per_s": round(sum(speeds) / len(speeds), 1) if speeds else None,
        "public_score": latest_public_score(run_dir),
    }


def table(runs: Sequence[Path], shared: Sequence[dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per run: `FIXED` columns, the settings that differ between the runs, then `RESULTS`; with ``shared``
    (the team's table: `src.tracking.share.shared_runs`) their rows too and the `TEAM` columns."""
    configs = {run: rundir.read_config(run) for run in runs}
    defaults = rundir.Config().flat()
    settings = [{k: _text(v) for k, v in (defaults | rundir.changed_settings(c)).items()} for c in configs.values()]
    settings += [{k: _text(v) for k, v in defaults.items()} | _settings(s["params"]) for s in shared or []]
    differing = [k for k in defaults if k != "arch" and len({s.get(k) for s in settings}) > 1]
    rows = []
    for (run, config), setting in zip(configs.items(), settings, strict=False):
        row = {"run": run.name, "status": status(run), "arch": config.model.arch}
        rows.append(row | _local_team(run) | {k: setting[k] for k in differing} | results(run))
    for remote, setting in zip(shared or [], settings[len(configs):], strict=True):
        rows.append(remote | {k: setting.get(k) for k in differing} | {"epochs_run": None, "wall_time": None})
    team = TEAM if shared is not None else []
    return pd.DataFrame(rows, columns=FIXED + team + differing + RESULTS)


def _settings(params: dict[str, str]) -> dict[str, str]:
    """MLflow params (text; lists as JSON) as the table shows settings."""
    def text(value: str) -> str:
        try:
            return _text(json.loads(value)) if value.startswith("[") else value
        except ValueError:
            return value

    return {k: text(v) for k, v in params.items()}


def _local_team(run: Path) -> dict[str, Any]:
    """The `TEAM` columns of a local run: this user, the config's date, the fingerprints of its folds and classes."""
    when = datetime.datetime.fromtimestamp(rundir.config_path(run).stat().st_mtime, datetime.UTC)
    return {"user": getpass.getuser(), "date": when.strftime("%Y-%m-%d %H:%M"), "folds": share.folds_fingerprint(run),
            "classes": share.classes_fingerprint(run)}


def sort(frame: pd.DataFrame, column: str, descending: bool = False) -> pd.DataFrame:
    """The table sorted by ``column`` (empty cells last).

    Raises:
        ValueError: no such column (the message lists them).
    """
    if column not in frame.columns:
        raise ValueError(f"--sort {column!r}: no such column; the columns are {', '.join(frame.columns)}")
    return frame.sort_values(column, ascending=not descending, na_position="last", kind="stable")


def render(frame: pd.DataFrame, style: str) -> str:
    """The table as an aligned terminal table, a Markdown table or CSV."""
    if style == "csv":
        return frame.to_csv(index=False)
    text = frame.astype(object).where(frame.notna(), "")
    if style == "table":
        return text.to_string(index=False)
    cells = [list(map(str, text.columns))] + [[str(v) for v in row] for row in text.itertuples(index=False)]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join([lines[0], "| " + " | ".join("---" for _ in text.columns) + " |", *lines[1:]])


def diff(run_a: Path, run_b: Path) -> str:
    """The settings that differ between two runs (run control included) and their scores' difference."""
    config_a, config_b = rundir.read_config(run_a), rundir.read_config(run_b)
    flat_a, flat_b = config_a.flat(), config_b.flat()
    lines = [f"{'setting':<24} {run_a.name:>24} {run_b.name:>24}"]
    lines += [f"{k:<24} {_text(flat_a[k]):>24} {_text(flat_b[k]):>24}" for k in flat_a if flat_a[k] != flat_b.get(k)]
    if len(lines) == 1:
        lines.append("(the same settings)")
    a, b = results(run_a), results(run_b)
    for column in ("best", "oof"):
        if a[column] is not None and b[column] is not None:
            lines.append(
                f"{column} {a['metric']}: {a[column]:.4f} vs {b[column]:.4f} "
                f"({b[column] - a[column]:+.4f}, {run_b.name} minus {run_a.name})"
            )
    return "\n".join(lines)


def resolve_run(name: str, folders: Sequence[str], uri: str | None = None) -> Path:
    """A run folder given as a path, as a name inside one of ``folders``, or as ``mlflow:<run-id>`` (pulled from
    ``uri``, `src.tracking.share.resolve_run`).

    Raises:
        FileNotFoundError: none of them.
    """
    if name.startswith(share.SHARE_PREFIX):
        return share.resolve_run(name, uri)
    candidates = [Path(name)] + [Path(folder) / name for folder in folders]
    for candidate in candidates:
        if rundir.config_path(candidate).is_file():
            return candidate
    raise FileNotFoundError(f"--diff {name}: no run folder (with config.yaml) of that name in {', '.join(folders)}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["push"]:
        return run_cli(lambda: push(parse_args(PushConfig, argv[1:], prog="python -m src.runs push")))

    def command() -> None:
        config = parse_args(RunsConfig, argv, prog="python -m src.runs")
        if config.diff:
            print(diff(*(resolve_run(name, config.folders, config.mlflow) for name in config.diff)))
            return
        shared = None
        folders = config.folders
        if config.mlflow:
            shared = share.shared_runs(config.mlflow, config.experiment, config.user)
            folders = [f for f in folders if Path(f).is_dir() or folders != ["experiments"]]
        runs = find_runs(folders)
        if not runs and not shared:
            print(f"no runs in {', '.join([*config.folders, *([config.mlflow] if config.mlflow else [])])}")
            return
        print(render(sort(table(runs, shared), config.sort, config.descending), config.format))

    return run_cli(command)


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


if __name__ == "__main__":
    sys.exit(main())
