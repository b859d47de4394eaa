"""A run shared through the team's MLflow store (issue: a team's experiments): ``python -m src.runs push`` uploads
a run folder's files and a manifest (size, sha256) under ``share/`` of its MLflow run, tagging it complete last
(a push again resumes, sending only what it has not sent yet);
``mlflow:<run-id>`` wherever a run folder goes (`resolve_run`) is downloaded once into a cache, through a temporary
folder, and checked against the manifest at each use. MLflow has no such round trip of a run folder: our own."""

from __future__ import annotations

import datetime
import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from src.config import Config, load_config_file
from src.targets import Task
from src.tracking import rundir
from src.tracking.mlflow_log import experiment_id, import_mlflow, params, read_run_id, tracking_uri
from src.utils import files

logger = logging.getLogger(__name__)

SHARE_PREFIX = "mlflow:"
SHARE_FOLDER = "share"  # the artifact folder holding the run folder's files
SHARE_TAG = "share.complete"  # "true" only once every file and the manifest are uploaded
FOLDS_TAG = "share.folds"  # the first 12 hex digits of the sha256 of the run's folds.csv: runs on the same folds
CLASSES_TAG = "share.classes"  # 12 hex digits of the sha256 of its label encoding: runs of the same classes, in order
MEMBERS_TAG = "share.members"  # an ensemble's or a soup's runs, comma-separated
PUBLIC_TAG = "share.public"  # the public score of the run's latest scored Kaggle submission
USER_TAG = "mlflow.user"
SOUP = "soup.json"
STALE_S = 3600  # a temporary download folder older than this was left by a killed pull
SHARED_FILES = (
    rundir.CONFIG, rundir.CLASSES, rundir.FOLDS, rundir.HISTORY, rundir.SUMMARY, rundir.CV_SUMMARY, rundir.OOF,
    rundir.PREDICTIONS, rundir.TEST_PREDICTIONS, rundir.SUBMISSION, rundir.ENSEMBLE, SOUP,
)


def shared_files(run_dir: Path, with_checkpoints: bool = False) -> list[Path]:
    """What a teammate needs of a run folder: `SHARED_FILES` of the folder and of its ``fold<k>/`` sub-folders,
    and with ``with_checkpoints`` their best checkpoints (``best_model_*.pt``)."""
    found = []
    for folder in [run_dir, *sorted(run_dir.glob("fold[0-9]*"))]:
        found += [folder / name for name in SHARED_FILES if (folder / name).is_file()]
        if with_checkpoints:
            found += sorted(folder.glob(rundir.BEST_MODELS))
    return found


def manifest(root: Path, paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Relative path (POSIX) -> ``{"size": bytes, "sha256": hex}`` of each file."""
    return {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": files.sha256(p)} for p in paths}


def _store_error(uri: str, error: Exception) -> Exception:
    """A tracking store's failure as one line: FileNotFoundError for a run it does not hold, ConnectionError else."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
        return FileNotFoundError(f"--mlflow {uri}: {first}")
    return ConnectionError(f"--mlflow {uri}: cannot use the tracking store: {first}")


def _share_run(client, run_dir: Path, uri: str) -> str:
    """The MLflow run a push uploads to: the one ``--mlflow`` training (or an earlier push) recorded in the folder,
    or a new one named after the folder in its config's ``--mlflow-experiment`` (ended as finished; recorded in
    ``mlflow.json`` unless the folder holds another store's run)."""
    saved = read_run_id(run_dir, uri)
    if saved is not None:
        return saved
    config_file = rundir.first_file(run_dir, rundir.CONFIG)
    config = load_config_file(config_file) if config_file is not None else Config()
    config.track.mlflow = uri
    experiment = experiment_id(import_mlflow(), config)
    run = client.create_run(experiment, run_name=run_dir.name, tags={"run_dir": str(run_dir.resolve())})
    if config_file is not None:  # the settings, as --mlflow training logs them, for the team's table
        from mlflow.entities import Param

        logged = [Param(k, v) for k, v in params(config).items()]
        for start in range(0, len(logged), 100):
            client.log_batch(run.info.run_id, params=logged[start:start + 100])
    client.set_terminated(run.info.run_id, "FINISHED")
    if not (run_dir / rundir.MLFLOW_RUN).exists():  # a push again (after an interruption) goes to the same run
        files.write_text(run_dir / rundir.MLFLOW_RUN, json.dumps({"tracking_uri": uri, "run_id": run.info.run_id}))
    return run.info.run_id


def push(run_dir: Path, uri: str, with_checkpoints: bool = False, tags: dict[str, str] | None = None) -> str:
    """Uploads a run folder's `shared_files` and their manifest (`rundir.SHARE_MANIFEST`) under ``share/`` of its
    MLflow run with the tags of `describe` (and ``tags``), then tags it ``share.complete`` = "true", last: an
    interrupted push leaves it "false". A push again resumes (`_upload`): a file it already uploaded to the same run
    with the same content is not sent again. An ensemble's or a soup's folder pushes as a run. Returns the run id.

    Raises:
        FileNotFoundError: not a run folder (no config.yaml or ensemble.json in it or its folds).
        ValueError: mlflow not installed; ConnectionError: the tracking store cannot be used.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(rundir.first_file(run_dir, n) for n in (rundir.CONFIG, rundir.ENSEMBLE)):
        raise FileNotFoundError(f"{run_dir}: not a run folder (no {rundir.CONFIG}, no {rundir.ENSEMBLE})")
    mlflow = import_mlflow()
    paths = shared_files(run_dir, with_checkpoints)
    files_manifest = manifest(run_dir, paths)
    try:
        mlflow.set_tracking_uri(tracking_uri(uri))
        client = mlflow.MlflowClient(tracking_uri(uri))
        run_id = _share_run(client, run_dir, uri)
        client.set_tag(run_id, SHARE_TAG, "false")
        for key, value in (describe(run_dir) | dict(tags or {})).items():
            client.set_tag(run_id, key, value)
        if USER_TAG not in client.get_run(run_id).data.tags:  # a run made by a push, not by --mlflow training
            client.set_tag(run_id, USER_TAG, getpass.getuser())
        _upload(client, run_id, run_dir, files_manifest, uri)
        client.log_dict(run_id, {"run_dir": run_dir.name, "files": files_manifest},
                        f"{SHARE_FOLDER}/{rundir.SHARE_MANIFEST}")
        client.set_tag(run_id, SHARE_TAG, "true")
    except (ValueError, FileNotFoundError, ConnectionError):
        raise
    except Exception as error:  # noqa: BLE001 - MlflowException and the HTTP client's errors
        raise _store_error(uri, error) from None
    return run_id


def _upload(client, run_id: str, run_dir: Path, files_manifest: dict[str, dict[str, Any]], uri: str) -> None:
    """Uploads the manifest's files under ``share/``, but those that the folder's receipt (`rundir.SHARE_RECEIPT`:
    the store, the run and each uploaded file's sha256, rewritten atomically after each upload) says were uploaded
    to this run with this content and that the store holds at their size: an interrupted push resumes where it
    stopped, and an edited file goes again. The receipt stays local (it is no shared file)."""
    receipt_path, store = run_dir / rundir.SHARE_RECEIPT, tracking_uri(uri)
    try:
        receipt = json.loads(receipt_path.read_text())
        sent = dict(receipt["files"]) if (receipt["run_id"], receipt["tracking_uri"]) == (run_id, store) else {}
    except (OSError, ValueError, KeyError, TypeError):
        sent = {}
    stored = _stored_sizes(client, run_id, SHARE_FOLDER) if sent else {}
    for name, entry in files_manifest.items():
        remote = f"{SHARE_FOLDER}/{name}"
        if sent.get(name) == entry["sha256"] and stored.get(remote) == entry["size"]:
            continue
        client.log_artifact(run_id, str(run_dir / name), remote.rsplit("/", 1)[0])
        sent[name] = entry["sha256"]
        files.write_text(receipt_path, json.dumps({"run_id": run_id, "tracking_uri": store, "files": sent}))


def _stored_sizes(client, run_id: str, folder: str) -> dict[str, int]:
    """Artifact path -> size in bytes of every file the run's artifact ``folder`` holds, its sub-folders' too."""
    sizes = {}
    for info in client.list_artifacts(run_id, folder):
        if info.is_dir:
            sizes |= _stored_sizes(client, run_id, info.path)
        else:
            sizes[info.path] = info.file_size
    return sizes


def push_after_training(run_dir: Path, uri: str, with_checkpoints: bool) -> str | None:
    """`push` of a run that ``--mlflow`` training just finished; a failure is a warning, never the run's failure."""
    try:
        run_id = push(run_dir, uri, with_checkpoints)
    except Exception as error:  # noqa: BLE001 - the run is trained: nothing of the store may fail it
        logger.warning("MLflow: could not push %s (%s); push it later: python -m src.runs push %s --mlflow %s",
                       run_dir, error, run_dir, uri)
        return None
    logger.info("pushed %s to %s: teammates use it as mlflow:%s", run_dir, uri, run_id)
    return run_id


def folds_fingerprint(run_dir: Path) -> str | None:
    """The first 12 hex digits of the sha256 of the run's ``folds.csv`` (its folder's, else its first fold's)."""
    path = run_dir / rundir.FOLDS if (run_dir / rundir.FOLDS).is_file() else rundir.first_file(run_dir, rundir.FOLDS)
    return files.sha256(path)[:12] if path is not None else None


def label_fingerprint(task: Task) -> str:
    """The first 12 hex digits of the sha256 of a task's label encoding: its kind, label columns and their classes
    in order (not its head weights, a training setting)."""
    encoding = {"kind": task.kind, "heads": [[h.column, list(h.classes)] for h in task.heads]}
    return hashlib.sha256(json.dumps(encoding, sort_keys=True).encode()).hexdigest()[:12]


def run_classes(run_dir: Path) -> Task | None:
    """The task of the run's ``classes.json`` (its folder's, else its first fold's), or None without one."""
    own = run_dir / rundir.CLASSES
    path = own if own.is_file() else rundir.first_file(run_dir, rundir.CLASSES)
    return Task.from_dict(json.loads(path.read_text())) if path is not None else None


def classes_fingerprint(run_dir: Path) -> str | None:
    """`label_fingerprint` of the run's ``classes.json``, or None without one (an ensemble's folder)."""
    task = run_classes(run_dir)
    return label_fingerprint(task) if task is not None else None


def label_difference(ours: Task, theirs: Task, names: tuple[str, str] = ("here", "there")) -> str | None:
    """The first difference between two label encodings (kind, label columns, classes and their order) in words,
    e.g. "class 1 of label: 'b' here, 'c' there" with ``names`` (ours, theirs); None when they are the same."""
    def both(mine, other) -> str:
        return ", ".join(f"{'no class' if v is None else repr(v)} {name}" for v, name in zip((mine, other), names))

    if ours.kind != theirs.kind:
        return f"task kind: {both(ours.kind, theirs.kind)}"
    columns = ([h.column for h in ours.heads], [h.column for h in theirs.heads])
    if columns[0] != columns[1]:
        return f"label columns: {both(*columns)}"
    for mine, other in zip(ours.heads, theirs.heads):
        for position in range(max(len(mine.classes), len(other.classes))):
            here, there = (h.classes[position] if position < len(h.classes) else None for h in (mine, other))
            if here != there:
                return f"class {position} of {mine.column}: {both(here, there)}"
    return None


def members(run_dir: Path) -> list[str]:
    """The runs an ensemble (``ensemble.json``) or a soup (its folds' ``soup.json`` ingredients) is made of."""
    names: list[str] = []
    blend = run_dir / rundir.ENSEMBLE
    if blend.is_file():
        names += [n if n.startswith(SHARE_PREFIX) else Path(n).name for n in json.loads(blend.read_text())["runs"]]
    for soup in sorted(run_dir.glob(f"**/{SOUP}")):
        for checkpoint in map(Path, json.loads(soup.read_text()).get("ingredients", [])):
            folder = checkpoint.parent.parent if checkpoint.parent.name.startswith("fold") else checkpoint.parent
            names.append(folder.name)
    return list(dict.fromkeys(names))


def describe(run_dir: Path) -> dict[str, str]:
    """The tags a pushed run carries for the team's table: ``share.folds`` (`folds_fingerprint`), ``share.classes``
    (`classes_fingerprint`), ``share.best`` (the best valid score, the folds' mean for ``--fold all``), ``share.oof``
    (the OOF score or the blend's), ``share.metric`` and ``share.members`` (`members`); those the folder has."""
    summary = rundir.read_summary(run_dir)
    blend = json.loads((run_dir / rundir.ENSEMBLE).read_text()) if (run_dir / rundir.ENSEMBLE).is_file() else {}
    found = {
        FOLDS_TAG: folds_fingerprint(run_dir),
        CLASSES_TAG: classes_fingerprint(run_dir),
        "share.best": summary.get("mean", summary.get("best_valid_score")),
        "share.oof": summary.get("oof_score", blend.get("oof_blend")),
        "share.metric": summary.get("selected_by", blend.get("metric")),
        MEMBERS_TAG: ",".join(members(run_dir)) or None,
    }
    return {k: str(v) for k, v in found.items() if v is not None}


def shared_runs(uri: str, experiment: str | None = None, user: str | None = None) -> list[dict[str, Any]]:
    """The store's shared runs (``share.complete`` = "true"), newest first, in ``experiment`` (every experiment if
    None) and of ``user`` (anyone's if None): ``run`` (``mlflow:<id>``), ``status``, ``user``, ``date``, ``arch``,
    ``folds``, ``classes``, ``best``, ``oof``, ``metric``, ``public_score``, ``members`` and ``params`` (their text).

    Raises:
        ValueError: no such experiment; ConnectionError: the store cannot be used.
    """
    mlflow = import_mlflow()
    try:
        client = mlflow.MlflowClient(tracking_uri(uri))
        if experiment is None:
            ids = [e.experiment_id for e in client.search_experiments()]
        else:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise ValueError(f"--experiment {experiment}: no such experiment in {uri}")
            ids = [found.experiment_id]
        query = f"tags.`{SHARE_TAG}` = 'true'" + (f" AND tags.`{USER_TAG}` = '{user}'" if user else "")
        found_runs = client.search_runs(ids, query, max_results=1000) if ids else []
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - MlflowException and the HTTP client's errors
        raise _store_error(uri, error) from None
    return [_row(run) for run in found_runs]


def _row(run) -> dict[str, Any]:
    tags, settings = run.data.tags, run.data.params
    started = datetime.datetime.fromtimestamp(run.info.start_time / 1000, datetime.UTC)
    return {
        "run": f"{SHARE_PREFIX}{run.info.run_id}", "status": run.info.status.lower(), "user": tags.get(USER_TAG),
        "date": started.strftime("%Y-%m-%d %H:%M"), "arch": settings.get("arch"), "folds": tags.get(FOLDS_TAG),
        "classes": tags.get(CLASSES_TAG),
        "best": _number(tags.get("share.best")), "oof": _number(tags.get("share.oof")),
        "metric": tags.get("share.metric"), "public_score": tags.get(PUBLIC_TAG),
        "members": tags.get(MEMBERS_TAG), "params": dict(settings),
    }


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def tag_public_score(run_dir: Path, public_score: str) -> str | None:
    """Tags the MLflow run that the folder's ``mlflow.json`` records (its ``--mlflow`` training, its push, or the
    shared run it is a `local_copy` of) with its Kaggle public score (`PUBLIC_TAG`: the team table's column).

    Returns:
        The run id, or None when the folder records no run (or no tracking store).

    Raises:
        ValueError: mlflow not installed; FileNotFoundError: a run the store does not hold; ConnectionError: the
            store cannot be used.
    """
    try:
        saved = json.loads((Path(run_dir) / rundir.MLFLOW_RUN).read_text())
    except (OSError, ValueError):
        return None
    run_id, uri = saved.get("run_id"), saved.get("tracking_uri")
    if not run_id or not uri:
        return None
    mlflow = import_mlflow()
    try:
        mlflow.MlflowClient(tracking_uri(uri)).set_tag(run_id, PUBLIC_TAG, str(public_score))
    except Exception as error:  # noqa: BLE001 - MlflowException and the HTTP client's errors
        raise _store_error(uri, error) from None
    return run_id


def local_copy(spec: str, uri: str | None, out: str | Path | None = None) -> Path:
    """A shared run (``mlflow:<run-id>``, `resolve_run`) copied out of the download cache into a folder of one's
    own, to write into (a Kaggle submission's record): ``out``, by default
    ``experiments/<its run folder's name>-<the id's first 8 characters>``. Its ``mlflow.json`` names the shared run
    (and the store, when known), so a copy made earlier is recognised, refreshed and written into again.

    Raises:
        ValueError: ``out`` exists, not empty, and is not a copy of this run; see `resolve_run` for the rest.
    """
    cached = resolve_run(spec, uri)
    run_id, uri = cached.name, share_uri(uri)
    name = json.loads((cached / rundir.SHARE_MANIFEST).read_text()).get("run_dir") or run_id
    target = Path(out) if out is not None else Path("experiments") / f"{name}-{run_id[:8]}"
    copied = {}
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        try:
            copied = dict(json.loads((target / rundir.MLFLOW_RUN).read_text()))
        except (OSError, ValueError, TypeError):
            pass
        if copied.get("run_id") != run_id:
            raise ValueError(f"--out {target}: exists and is not a copy of {spec}; pass another --out")
    shutil.copytree(cached, target, dirs_exist_ok=True)
    saved = {"tracking_uri": uri or copied.get("tracking_uri"), "run_id": run_id}  # the store, once known
    files.write_text(target / rundir.MLFLOW_RUN, json.dumps(saved))
    return target


def share_uri(uri: str | None) -> str | None:
    """The tracking URI a pull uses: ``--mlflow`` if given, else ``MLFLOW_TRACKING_URI``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def cache_root() -> Path:
    """Where pulled runs are kept: ``$XDG_CACHE_HOME/kaggle-trainer/mlflow`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaggle-trainer" / "mlflow"


def resolve_run(spec: str | Path, uri: str | None = None) -> Path:
    """A run folder argument: a local folder as it is, or ``mlflow:<run-id>`` (or ``mlflow:<experiment>/<run-name>``,
    the newest shared run of that name), a run shared with `push`, downloaded
    once into `cache_root`/<run-id> (into a temporary folder renamed into place once every file matches the
    manifest) and checked against its manifest (size, sha256) each time it is used; a cached copy that no longer
    matches is downloaded again.

    Raises:
        ValueError: no tracking URI, a malformed id, a run not shared completely (no ``share.complete`` tag), or
            files that do not match the manifest after a fresh download.
        FileNotFoundError: a run id the store does not hold; ConnectionError: the store cannot be used.
    """
    text = str(spec)
    if not text.startswith(SHARE_PREFIX):
        return Path(spec)
    run_id, uri = text[len(SHARE_PREFIX):], share_uri(uri)
    if "/" in run_id:  # mlflow:<experiment>/<run-name>: the newest shared run of that name
        run_id = _run_named(text, uri)
    if not re.fullmatch(r"[0-9A-Za-z_-]+", run_id):
        raise ValueError(f"{text}: not an MLflow run id (mlflow:<run-id>, letters and digits)")
    target = cache_root() / run_id
    if target.is_dir() and not _mismatches(target):
        return target
    if uri is None:
        raise ValueError(f"{text}: no tracking store: pass --mlflow URI or set MLFLOW_TRACKING_URI")
    _download(run_id, uri, target)
    return target


def _run_named(text: str, uri: str | None) -> str:
    """The id of the newest completely shared run named ``<run-name>`` in experiment ``<experiment>`` of
    ``mlflow:<experiment>/<run-name>``.

    Raises:
        ValueError: no tracking URI, or a name with a quote (the store's filter language cannot hold it).
        FileNotFoundError: no such experiment, or no shared run of that name in it.
    """
    experiment, name = text[len(SHARE_PREFIX):].split("/", 1)
    if uri is None:
        raise ValueError(f"{text}: no tracking store: pass --mlflow URI or set MLFLOW_TRACKING_URI")
    if "'" in name or not name:
        raise ValueError(f"{text}: expected mlflow:<experiment>/<run-name>, a run name without quotes")
    mlflow = import_mlflow()
    try:
        client = mlflow.MlflowClient(tracking_uri(uri))
        found = client.get_experiment_by_name(experiment)
        runs = [] if found is None else client.search_runs(
            [found.experiment_id], f"tags.mlflow.runName = '{name}' and tags.`{SHARE_TAG}` = 'true'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
    except Exception as error:  # noqa: BLE001 - MlflowException and the HTTP client's errors
        raise _store_error(uri, error) from None
    if found is None:
        raise FileNotFoundError(f"{text}: --mlflow {uri} has no experiment {experiment!r}")
    if not runs:
        raise FileNotFoundError(f"{text}: no run named {name!r} shared completely in experiment {experiment!r}")
    return runs[0].info.run_id


def _mismatches(folder: Path) -> list[str]:
    """The files of a pulled run that differ from its manifest (missing, another size or sha256); the manifest
    itself when it is missing or unreadable."""
    try:
        listed = json.loads((folder / rundir.SHARE_MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return [rundir.SHARE_MANIFEST]
    wrong = []
    for name, entry in listed.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != entry["size"] or files.sha256(path) != entry["sha256"]:
            wrong.append(name)
    return wrong


def _download(run_id: str, uri: str, target: Path) -> None:
    """Downloads the run's ``share/`` folder next to ``target``, checks it, and renames it into place (replacing a
    damaged copy)."""
    mlflow = import_mlflow()
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{run_id}.*"):  # a pull killed outright; an hour: not one under way
        if time.time() - stale.stat().st_mtime > STALE_S:
            shutil.rmtree(stale, ignore_errors=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=target.parent))
    try:
        try:
            client = mlflow.MlflowClient(tracking_uri(uri))
            tags = client.get_run(run_id).data.tags
            if tags.get(SHARE_TAG) != "true":
                raise ValueError(f"mlflow:{run_id}: not shared completely (no {SHARE_TAG} tag): run "
                                 "`python -m src.runs push <run folder> --mlflow URI` again")
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SHARE_FOLDER, dst_path=str(temp),
                                                tracking_uri=tracking_uri(uri))
        except (ValueError, FileNotFoundError):
            raise
        except Exception as error:  # noqa: BLE001 - MlflowException and the HTTP client's errors
            raise _store_error(uri, error) from None
        pulled = temp / SHARE_FOLDER
        wrong = _mismatches(pulled)
        if wrong:
            raise ValueError(f"mlflow:{run_id}: {len(wrong)} downloaded file(s) differ from the manifest "
                             f"({', '.join(wrong[:3])}): push the run again")
        if target.exists():
            shutil.rmtree(target)
        os.replace(pulled, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
