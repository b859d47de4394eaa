"""``python -m src.kaggle submit <run or ensemble folder> -m "message"`` and ``submissions <competition>``.

A run's ``submission.csv`` is checked against the competition's sample submission (columns, ids, their order,
value types) before it is uploaded; the submission is then polled until Kaggle has scored it (or a timeout says
it is still pending) and recorded in the folder's ``kaggle_submissions.csv`` (competition, date, message, file
hash, public and private score), in the notes log and, through the run table (`src.runs`), beside the run's
other results. ``submissions`` lists the competition's submissions joined to the run folders that made them,
and fills in the scores of records that were still pending.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import Config
from src.inference.submission import check_unique
from src.kaggle.client import calling
from src.tracking import notes, rundir, share
from src.utils import files

RECORDS = "kaggle_submissions.csv"
COLUMNS = ["competition", "date", "message", "file", "sha256", "ref", "status", "public_score", "private_score"]
ENSEMBLE = "ensemble.json"


def folder_config(folder: Path, uri: str | None = None) -> Config:
    """The config of a run folder, or of an ensemble folder's first member (`src.ensemble` writes ensemble.json;
    a member shared as ``mlflow:<run-id>`` is downloaded from ``uri`` or MLFLOW_TRACKING_URI).

    Raises:
        FileNotFoundError: neither a run folder nor an ensemble folder.
    """
    if rundir.config_path(folder).is_file():
        return rundir.read_config(folder)
    if (folder / ENSEMBLE).is_file():
        members = list(json.loads((folder / ENSEMBLE).read_text())["runs"])
        return rundir.read_config(share.resolve_run(members[0], uri))
    raise FileNotFoundError(f"{folder}: not a run folder (config.yaml) nor an ensemble folder ({ENSEMBLE})")


def check_submission(path: Path, sample: Path) -> int:
    """Checks ``path`` against the sample submission; returns its row count.

    Raises:
        FileNotFoundError: either file is missing.
        ValueError: other columns or column order, an id listed twice, other ids, ids in another order, an empty
            value, or text (or NaN, an infinity) where the sample holds numbers (naming the column and the first
            offending row).
    """
    for name, file in (("submission", path), ("sample submission", sample)):
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no {name} file")
    ours = pd.read_csv(path, dtype=str, keep_default_na=False)
    theirs = pd.read_csv(sample, dtype=str, keep_default_na=False)
    if list(ours.columns) != list(theirs.columns):
        raise ValueError(f"{path}: columns {list(ours.columns)}, but {sample.name} has {list(theirs.columns)}")
    id_col = theirs.columns[0]
    check_unique(ours[id_col].tolist(), str(path))
    if set(ours[id_col]) != set(theirs[id_col]) or len(ours) != len(theirs):
        missing = sorted(set(theirs[id_col]) - set(ours[id_col]))
        raise ValueError(
            f"{path}: {len(ours)} rows for {len(theirs)} in {sample.name}; {len(missing)} of its ids missing "
            f"(e.g. {missing[:3]})"
        )
    order = (ours[id_col] != theirs[id_col]).to_numpy().nonzero()[0]
    if len(order):
        raise ValueError(f"{path}: row {order[0] + 2} holds id {ours[id_col].iloc[order[0]]!r}, {sample.name} "
                         f"{theirs[id_col].iloc[order[0]]!r} there; write it with --sample-submission")
    for column in theirs.columns[1:]:
        empty = (ours[column].str.strip() == "").to_numpy().nonzero()[0]
        if len(empty):
            raise ValueError(f"{path}: empty value in column {column!r} at row {empty[0] + 2}")
        if pd.to_numeric(theirs[column], errors="coerce").notna().all():
            values = pd.to_numeric(ours[column], errors="coerce").to_numpy(np.float64)
            bad = (~np.isfinite(values)).nonzero()[0]
            if len(bad):
                raise ValueError(f"{path}: column {column!r} row {bad[0] + 2} is {ours[column].iloc[bad[0]]!r}; "
                                 f"{sample.name} holds numbers there")
    return len(ours)


def _status(submission) -> str:
    status = getattr(submission, "status", "")
    return str(getattr(status, "name", status)).lower()


def _find(api, competition: str, ref: int, message: str):
    with calling(competition):
        listed = api.competition_submissions(competition) or []
    for submission in listed:
        if submission is not None and (submission.ref == ref if ref else submission.description == message):
            return submission
    return None


def wait_for_score(api, competition: str, ref: int, message: str, timeout_s: float, poll_s: float):
    """The submission once scored (or failed), or its latest state when ``timeout_s`` runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = _find(api, competition, ref, message)
        if found is not None and "pending" not in _status(found):
            return found
        if time.monotonic() + poll_s > deadline:
            return found
        time.sleep(poll_s)


def record(folder: Path, row: dict) -> None:
    """Adds or updates (same ``ref``) ``row`` in the folder's `RECORDS` (rewritten whole, atomically)."""
    path = folder / RECORDS
    frame = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame(columns=COLUMNS)
    row = {k: "" if row.get(k) is None else str(row[k]) for k in COLUMNS}
    same = frame["ref"] == row["ref"] if row["ref"] else pd.Series(False, index=frame.index)
    frame = pd.concat([frame[~same], pd.DataFrame([row])], ignore_index=True)
    files.write_csv(frame[COLUMNS], path)


def checked(folder: Path) -> tuple[Config, Path, int | None]:
    """The run's config and its submission.csv once checked (`check_submission` against the config's sample
    submission), with its row count (None without a sample submission).

    Raises:
        ValueError: no competition name in the run's config, or a submission that fails `check_submission`.
        FileNotFoundError: no submission.csv (or no sample submission where the config names one).
    """
    config = folder_config(folder)
    if not config.competition.competition:
        raise ValueError(f"{folder}: the run's config names no competition; train with --competition <name> "
                         "(src.kaggle inspect --competition writes it into train.yaml)")
    path = folder / rundir.SUBMISSION
    if config.competition.sample_submission:
        return config, path, check_submission(path, Path(config.competition.sample_submission))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no submission; write it with src.predict (or src.ensemble)")
    return config, path, None


def submit(connect, folder: Path, message: str, timeout_s: float = 600, poll_s: float = 10) -> dict:
    """Checks (`checked`), uploads, waits for the score and records it (see the module doc); returns the record.
    A scored submission of a folder with an MLflow run (``mlflow.json``) tags that run with its public score
    (`share.tag_public_score`); a failure to tag is a warning.

    ``connect`` gives the Kaggle client; it is called once the submission has passed the checks.

    Raises:
        ValueError: see `checked`, or an API error.
    """
    config, path, rows = checked(folder)
    competition = config.competition.competition
    if rows is not None:
        print(f"{path}: {rows} rows match {config.competition.sample_submission} (ids, order, columns, types)")
    digest = files.sha256(path)
    api = connect()
    with calling(competition):
        response = api.competition_submit(str(path), message, competition, quiet=True)
    ref = int(getattr(response, "ref", 0) or 0)
    print(f"submitted {path} to {competition}: {getattr(response, 'message', '') or 'uploaded'}")
    found = wait_for_score(api, competition, ref, message, timeout_s, poll_s)
    status = _status(found) if found is not None else "pending"
    row = {
        "competition": competition, "date": f"{datetime.now():%Y-%m-%d %H:%M}", "message": message, "file": str(path),
        "sha256": digest, "ref": ref or getattr(found, "ref", ""), "status": status,
        "public_score": getattr(found, "public_score", None), "private_score": getattr(found, "private_score", None),
    }
    record(folder, row)
    _note(config, folder, row)
    if "pending" in status:
        print(f"scoring still pending after {timeout_s:.0f} s; `python -m src.kaggle submissions {competition}` "
              "shows and records the score once it is there")
    else:
        print(f"{status}: public score {row['public_score'] or '-'}, private {row['private_score'] or '-'}")
    if row["public_score"] not in (None, ""):
        _tag(folder)
    return row


def _tag(folder: Path) -> None:
    """`share.tag_public_score` with the folder's `latest_public_score`, a failure printed as a warning: the
    submission is made and recorded."""
    public_score = latest_public_score(folder)
    if public_score is None:
        return
    try:
        run_id = share.tag_public_score(folder, public_score)
    except Exception as error:  # noqa: BLE001 - the store's failure must not fail a made submission
        print(f"warning: could not tag the MLflow run of {folder} with its public score: {error}")
        return
    if run_id is not None:
        print(f"MLflow run {run_id}: {share.PUBLIC_TAG} = {public_score} (the team table's public score)")


def _note(config: Config, folder: Path, row: dict) -> None:
    if not config.track.notes:
        return
    path = Path(config.track.notes_file or Path(config.run.output_dir) / "NOTES.md")
    entry = "\n".join([
        f"## {row['date']} {folder.name}: submitted to {row['competition']}",
        "",
        f"- message: {row['message']}",
        f"- file: `{row['file']}` (sha256 {row['sha256'][:12]})",
        f"- status: {row['status']}; public score {row['public_score'] or '-'}, private {row['private_score'] or '-'}",
    ])
    try:
        notes.append(path, entry)
    except OSError as error:
        print(f"warning: could not append the notes entry to {path}: {error}")


def latest_public_score(run_dir: Path) -> str | None:
    """The public score of the run's newest recorded submission, for the run table, or None."""
    path = Path(run_dir) / RECORDS
    if not path.is_file():
        return None
    scores = pd.read_csv(path, dtype=str, keep_default_na=False)["public_score"]
    scores = scores[scores != ""]
    return scores.iloc[-1] if len(scores) else None


def submissions(api, competition: str, runs_dir: Path) -> pd.DataFrame:
    """The competition's submissions, newest first, each with the run folder that recorded it (matched by
    ``ref``); records still pending in those folders get their scores (and their MLflow runs the public score, as
    `submit` tags them)."""
    with calling(competition):
        listed = [s for s in api.competition_submissions(competition) or [] if s is not None]
    recorded = {}
    for path in sorted(runs_dir.glob(f"*/{RECORDS}")) if runs_dir.is_dir() else []:
        for row in pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records"):
            if row["competition"] == competition and row["ref"]:
                recorded[row["ref"]] = (path.parent, row)
    rows = []
    for s in listed:
        folder, row = recorded.get(str(s.ref), (None, None))
        if row is not None and row["status"] != _status(s):
            record(folder, row | {"status": _status(s), "public_score": s.public_score,
                                  "private_score": s.private_score})
            _tag(folder)
        rows.append({"date": str(s.date)[:16], "ref": s.ref, "message": s.description, "status": _status(s),
                     "public_score": s.public_score, "private_score": s.private_score,
                     "run": folder.name if folder else ""})
    return pd.DataFrame(rows, columns=["date", "ref", "message", "status", "public_score", "private_score", "run"])
