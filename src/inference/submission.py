"""Submission files from probabilities, in the formats Kaggle image competitions use, checked against a sample.

Formats (``--submission-format``):

- ``label``: ``id,<label>``, the most likely class (Digit Recognizer, Dogs vs Cats as labels).
- ``topk``: ``id,<label>``, the k most likely classes space-separated, spaces in class names replaced by
  underscores (Quick, Draw!: ``word`` with 3 guesses, scored by MAP@3).
- ``tags``: ``id,<label>``, the tags whose probability exceeds their threshold, space-separated (Planet).
- ``long``: ``row_id,target``, one row per image and head, ``row_id = <id>_<head column>`` (Bengali.AI).
- ``probs``: ``id`` and one column per class with its probability, optionally clipped to [clip, 1 - clip]
  (log-loss competitions such as Dogs vs Cats).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.config.choices import SUBMISSION_FORMATS
from src.targets import Task
from src.utils import files

FORMATS = SUBMISSION_FORMATS
DEFAULT_FORMAT = {"single": "label", "multilabel": "tags", "multihead": "long"}
FORMAT_KINDS = {
    "label": ("single",),
    "topk": ("single",),
    "tags": ("multilabel",),
    "long": ("multihead",),
    "probs": ("single", "multilabel"),
}


@dataclasses.dataclass(frozen=True)
class SubmissionFormat:
    """How probabilities become a submission table.

    Attributes:
        name: one of `FORMATS` (module doc).
        id_col: the id column's name.
        top_k: guesses per row of ``topk``.
        threshold: a probability, or one per tag (C,), above which ``tags`` lists a tag.
        clip: ``probs`` clips the probabilities to [clip, 1 - clip].
    """

    name: str = "label"
    id_col: str = "id"
    top_k: int = 3
    threshold: float | np.ndarray = 0.5
    clip: float = 0.0


def make_submission(ids: Sequence[str], probs: np.ndarray, task: Task, form: SubmissionFormat) -> pd.DataFrame:
    """The submission table of probabilities (N, num_outputs) for ``ids`` in the format ``form`` (module doc).

    Args:
        ids: the test ids, length N.
        probs: float (N, num_outputs) probabilities (per head side by side for several heads).
        task: the run's task (class names, label columns).
        form: the format and its options.

    Raises:
        ValueError: an unknown format, or one the task kind has no use for; an id listed twice (`check_unique`);
            NaN or infinite probabilities (`check_finite`).
    """
    fmt, id_col = form.name, form.id_col
    check_format(task, form)
    ids = [str(i) for i in ids]
    check_unique(ids, "the submission")
    check_finite(ids, probs, "the submission")
    label = task.heads[0].column
    if fmt == "long":
        rows, targets = [], []
        offsets = np.cumsum([0, *task.sizes])
        for h, head in enumerate(task.heads):
            best = probs[:, offsets[h] : offsets[h + 1]].argmax(axis=1)
            rows += [f"{i}_{head.column}" for i in ids]
            targets += [head.classes[b] for b in best]
        order = np.arange(len(rows)).reshape(len(task.heads), len(ids)).T.ravel()  # image by image, heads in order
        return pd.DataFrame({"row_id": np.asarray(rows)[order], "target": np.asarray(targets)[order]})
    classes = np.asarray(task.classes)
    if fmt == "label":
        return pd.DataFrame({id_col: ids, label: classes[probs.argmax(axis=1)]})
    if fmt == "topk":
        top = np.argsort(-probs, axis=1, kind="stable")[:, : form.top_k]
        words = np.char.replace(classes.astype(str), " ", "_")
        return pd.DataFrame({id_col: ids, label: [" ".join(words[row]) for row in top]})
    if fmt == "tags":
        chosen = probs > np.asarray(form.threshold)
        return pd.DataFrame({id_col: ids, label: [" ".join(classes[row]) for row in chosen]})
    values = np.clip(probs, form.clip, 1.0 - form.clip) if form.clip > 0 else probs
    return pd.concat([pd.DataFrame({id_col: ids}), pd.DataFrame(values, columns=list(classes))], axis=1)


def check_format(task: Task, form: SubmissionFormat) -> None:
    """Checks that ``form`` names a format for ``task``'s kind.

    Raises:
        ValueError: an unknown format, or one the task kind has no use for.
    """
    if form.name not in FORMATS:
        raise ValueError(f"--submission-format {form.name!r}: unknown; known: {', '.join(FORMATS)}")
    if task.kind not in FORMAT_KINDS[form.name]:
        raise ValueError(
            f"--submission-format {form.name}: not for a {task.kind} task; use {DEFAULT_FORMAT[task.kind]}"
        )


def submission_columns(task: Task, form: SubmissionFormat) -> list[str]:
    """The columns `make_submission` writes for ``task`` in ``form``, known before any prediction.

    Raises:
        ValueError: as `check_format`.
    """
    check_format(task, form)
    if form.name == "long":
        return ["row_id", "target"]
    if form.name == "probs":
        return [form.id_col, *task.classes]
    return [form.id_col, task.heads[0].column]


def submission_ids(ids: Sequence[str], task: Task, form: SubmissionFormat) -> list[str]:
    """The first column `make_submission` writes for the test ids ``ids``: the ids, or ``<id>_<head column>`` per
    image and head in the long format."""
    if form.name == "long":
        return [f"{i}_{head.column}" for i in ids for head in task.heads]
    return [str(i) for i in ids]


def check_unique(ids: Sequence[str], where: str) -> None:
    """Checks that no id is listed twice: a submission holds each id once.

    Raises:
        ValueError: names the first three ids listed more than once, prefixed with ``where``.
    """
    counts = pd.Series(ids, dtype=object).value_counts(sort=False)
    twice = counts[counts > 1].index.tolist()
    if twice:
        raise ValueError(
            f"{where}: ids listed more than once: {twice[:3]} ({len(twice)} in all); a submission holds each id once"
        )


def check_finite(ids: Sequence[str], probs: np.ndarray, where: str) -> None:
    """Checks that every probability (N, num_outputs) is a finite number.

    Raises:
        ValueError: names the first three ids whose row holds NaN or an infinity, prefixed with ``where``.
    """
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    if len(bad):
        shown = [str(ids[i]) for i in bad[:3]]
        raise ValueError(
            f"{where}: probabilities are NaN or infinite for ids {shown} ({len(bad)} of {len(ids)} rows); "
            "nothing was written"
        )


def check_sample(columns: Sequence[str], ids: Sequence[str], sample_path: str | Path) -> tuple[pd.DataFrame, list]:
    """Checks a submission's columns and first-column ids (`submission_columns`, `submission_ids`) against the
    sample submission, before or after the prediction.

    Returns:
        The sample, and the submission's columns as the sample names them (the two columns of the one-label
        formats take the sample's names; otherwise the id column does).

    Raises:
        FileNotFoundError: no sample file.
        ValueError: different columns; ids of the sample not predicted or predicted ids not in it (counts and
            examples named); an id listed twice.
    """
    path = Path(sample_path)
    if not path.is_file():
        raise FileNotFoundError(f"--sample-submission {path}: no such file")
    sample = pd.read_csv(path, dtype=str)
    their_id = sample.columns[0]
    named = list(sample.columns) if len(columns) == 2 and len(sample.columns) == 2 else [their_id, *columns[1:]]
    if set(named) != set(sample.columns):
        raise ValueError(f"{path}: columns {list(sample.columns)} but the submission has {named}")
    check_unique(ids, f"submission for {path}")
    ours, theirs = set(map(str, ids)), set(sample[their_id])
    if ours != theirs:
        missing, extra = sorted(theirs - ours), sorted(ours - theirs)
        parts = [f"{len(missing)} ids of the sample are not predicted (e.g. {missing[:3]})"] if missing else []
        parts += [f"{len(extra)} predicted ids are not in the sample (e.g. {extra[:3]})"] if extra else []
        raise ValueError(f"{path}: {' and '.join(parts)}")
    return sample, named


def match_sample(submission: pd.DataFrame, sample_path: str | Path) -> pd.DataFrame:
    """Puts the submission in the sample submission's id order and column names, and checks it (`check_sample`).

    The first column is the id (``row_id`` in the long format). For the one-label formats the second column
    takes the sample's name; for ``probs`` the class columns must be the sample's (any order).

    Raises:
        FileNotFoundError: no sample file.
        ValueError: as `check_sample`, or an empty (NaN) value.
    """
    ids = submission.iloc[:, 0].astype(str)
    sample, named = check_sample(list(submission.columns), ids.tolist(), sample_path)
    their_id = sample.columns[0]
    submission = submission.set_axis(named, axis=1).set_index(ids).loc[sample[their_id]].reset_index(drop=True)
    submission = submission[list(sample.columns)]
    if submission.isna().any().any():
        raise ValueError(
            f"submission for {sample_path}: empty values in columns "
            f"{list(submission.columns[submission.isna().any()])}"
        )
    return submission


def write_submission(submission: pd.DataFrame, path: str | Path, sample_path: str | Path | None = None) -> Path:
    """Writes the submission to ``path``, first put in the sample submission's order and checked against it
    (`match_sample`) when ``sample_path`` is given. Returns the path.

    Raises:
        FileNotFoundError, ValueError: as `match_sample`; nothing is written then.
    """
    if sample_path:
        submission = match_sample(submission, sample_path)
    files.write_csv(submission, path)
    return Path(path)
