"""``python -m src.kaggle inspect <folder>``: a competition folder read into a first training config.

`inspect_folder` finds the training table, the images (or pixel columns, parquet files, strokes), the id and
label columns, the task (one label, space-separated tags, several heads), the test set and the sample
submission with the submission format it implies. Each choice is kept with its evidence (`Finding.evidence`),
and what it cannot decide is named with the flag that sets it (`Finding.undecided`); it never guesses silently.
Our own code: no library reads a Kaggle competition's files into a trainer's config.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from src.config import Config
from src.data.sources import read_source
from src.kaggle import templates
from src.tracking import rundir, share
from src.utils import files

TRAIN_YAML = "train.yaml"
LABEL_NAMES = ("label", "labels", "target", "class", "category", "diagnosis", "tags", "word", "sirna", "landmark_id")
ID_NAMES = ("id", "image_id", "image_name", "id_code", "key_id", "image", "filename", "file", "name")
PIXEL_COLUMN = re.compile(r"(pixel)?\d+")


@dataclasses.dataclass
class Finding:
    """What `inspect_folder` decided: config `fields` (flat names), `evidence` (one line each), `undecided`."""

    folder: Path
    image_folders: dict[Path, int] = dataclasses.field(default_factory=dict)  # `templates.image_folders`, read once
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    evidence: list[str] = dataclasses.field(default_factory=list)
    undecided: list[str] = dataclasses.field(default_factory=list)

    def decide(self, name: str, value: Any, why: str) -> None:
        self.fields[name] = value
        shown = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
        self.evidence.append(f"--{name.replace('_', '-')} {shown}: {why}")

    def cannot(self, what: str, flag: str) -> None:
        self.undecided.append(f"{what}; set {flag}")

    def rel(self, path: str | Path) -> str:
        return str(Path(path).relative_to(self.folder)).replace(os.sep, "/")


def inspect_folder(folder: str | Path, competition: str | None = None, source: str = "given") -> Finding:
    """Reads ``folder`` (a competition's unzipped files) into a `Finding`.

    Raises:
        FileNotFoundError: no such folder, or no table in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    finding = Finding(folder)
    if competition:
        finding.decide("competition", competition, source)
    else:
        finding.cannot("the competition's name is not known (src.kaggle submit and bundle need it)", "--competition")
    finding.fields["data_root"] = str(folder)
    tables = _tables(folder)
    sample = _sample_submission(tables)
    train = _stroke_tables(finding, tables) or _train_table(finding, tables, sample)
    frame = _read_head(train)
    if "drawing" in frame.columns:
        _strokes(finding, frame)
    elif _pixel_columns(frame):
        _pixels(finding, frame)
    elif _parquets(folder, "train"):
        _parquet(finding, frame)
    else:
        _images(finding, frame)
    _labels(finding, frame, sample)
    _test_side(finding, tables, sample)
    return finding


def _tables(folder: Path) -> list[Path]:
    found = [p for p in folder.rglob("*.csv") if len(p.relative_to(folder).parts) <= 2]
    return sorted(found, key=lambda p: (len(p.relative_to(folder).parts), p.name))


def _read_head(path: Path | str, rows: int = 2000) -> pd.DataFrame:
    paths = sorted(glob.glob(str(path))) if "*" in str(path) else [path]
    return pd.concat([pd.read_csv(p, dtype=str, nrows=rows, keep_default_na=False) for p in paths[:3]])


def _sample_submission(tables: list[Path]) -> Path | None:
    samples = [p for p in tables if "sample" in p.stem.lower() and "sub" in p.stem.lower()]
    return samples[0] if samples else None


def _stroke_tables(finding: Finding, tables: list[Path]) -> str | None:
    """QuickDraw: a folder of one CSV per class, each with a ``drawing`` column."""
    by_folder: dict[Path, list[Path]] = {}
    for path in tables:
        if path.parent != finding.folder and "drawing" in pd.read_csv(path, nrows=0).columns:
            by_folder.setdefault(path.parent, []).append(path)
    if not by_folder:
        return None
    parent, members = max(by_folder.items(), key=lambda item: len(item[1]))
    pattern = str(parent / "*.csv")
    finding.decide("train_csv", pattern, f"{len(members)} CSVs in `{finding.rel(parent)}/` with a `drawing` column")
    return pattern


def _train_table(finding: Finding, tables: list[Path], sample: Path | None) -> Path:
    others = [p for p in tables if p != sample and not re.search(r"test|solution|submission", p.stem.lower())]
    named = [p for p in others if "train" in p.stem.lower()] or [p for p in others if "label" in p.stem.lower()]
    chosen = (named or others or [None])[0]
    if chosen is None:
        raise FileNotFoundError(f"{finding.folder}: no training table (a CSV other than test and sample submission)")
    with open(chosen) as table:
        rows = sum(1 for _ in table) - 1
    columns = list(pd.read_csv(chosen, nrows=0).columns)
    shown = ", ".join(columns[:8]) + (f", ... ({len(columns)} columns)" if len(columns) > 8 else "")
    why = "named train" if named else "the only table besides test and sample submission"
    finding.decide("train_csv", str(chosen), f"{rows} rows, columns {shown} ({why})")
    return chosen


def _pixel_columns(frame: pd.DataFrame) -> list[str]:
    pixels = [c for c in frame.columns if PIXEL_COLUMN.fullmatch(str(c))]
    return pixels if len(pixels) >= 64 else []


def _side(finding: Finding, count: int, source: str) -> None:
    side = math.isqrt(count)
    if side * side == count:
        finding.evidence.append(f"image size {side} x {side}: {count} {source} (a square)")
    else:
        finding.cannot(f"image size: {count} {source} is not a square", "--height and --width")


def _pixels(finding: Finding, frame: pd.DataFrame) -> None:
    pixels = _pixel_columns(frame)
    finding.decide("layout", "pixels", f"{len(pixels)} pixel columns ({pixels[0]} ... {pixels[-1]})")
    _side(finding, len(pixels), "pixel columns")


def _strokes(finding: Finding, frame: pd.DataFrame) -> None:
    finding.decide("layout", "strokes", "the table has a `drawing` column (QuickDraw strokes)")
    if "key_id" in frame.columns:
        finding.decide("id_col", "key_id", "QuickDraw's id column")


def _parquets(folder: Path, part: str) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet") if part in p.stem.lower())


def _pattern(paths: list[Path]) -> str:
    """One path, or a glob over the files' common name prefix (``train_image_data_*.parquet``)."""
    stem = os.path.commonprefix([p.name for p in paths])
    return str(paths[0].parent / (stem + "*" + paths[0].suffix)) if len(paths) > 1 else str(paths[0])


def _parquet(finding: Finding, frame: pd.DataFrame) -> None:
    import pyarrow.parquet as pq

    paths = _parquets(finding.folder, "train")
    finding.decide("layout", "parquet", f"{len(paths)} parquet file(s) named train")
    finding.decide("parquet", _pattern(paths), ", ".join(finding.rel(p) for p in paths))
    names = pq.read_schema(paths[0]).names
    id_col = names[0]
    if id_col in frame.columns:
        finding.decide("id_col", id_col, f"the first column of the parquet files, also in `{finding.rel(paths[0])}`")
    else:
        finding.cannot(f"the id column: the parquet's first column `{id_col}` is not in the table", "--id-col")
    _side(finding, len(names) - 1, "pixel columns in the parquet files")


def _images(finding: Finding, frame: pd.DataFrame) -> None:
    folders = finding.image_folders = templates.image_folders(finding.folder)
    if not folders:
        raise FileNotFoundError(f"{finding.folder}: no images, pixel columns, parquet files or strokes found")
    train = [f for f in folders if "train" in f.name.lower()] or [f for f in folders if "test" not in f.name.lower()]
    root = max(train or list(folders), key=folders.get)
    paths = templates.image_files(root)
    id_col, matches = _id_column(frame, paths)
    if id_col is None:
        finding.cannot(f"the id column: no column's values name the files in `{finding.rel(root)}/`", "--id-col")
        return
    finding.decide("layout", "images", f"{folders[root]} image files in `{finding.rel(root) or '.'}/`")
    finding.decide("image_dir", str(root), f"the image folder{' named train' if 'train' in root.name.lower() else ''}")
    finding.decide("id_col", id_col, f"unique, and {matches} of {min(len(frame), 20)} sampled values name image files")
    found = templates.infer(frame, id_col, paths, root)
    if found is None:
        finding.cannot("the image file of a row: no one template names every sampled row's file", "--image-template")
        return
    finding.decide("image_template", found.template, f"found for {found.found} of {found.sampled} sampled rows "
                   f"(e.g. `{found.example}`)")
    if found.channels:
        finding.decide("channels", list(found.channels), f"{len(found.channels)} files per row, stacked as channels")


def _id_column(frame: pd.DataFrame, paths: list[str]) -> tuple[str | None, int]:
    sample = frame.head(20)
    scored = []
    for column in frame.columns:
        if not frame[column].is_unique:
            continue
        matches = templates.id_matches(sample[column].tolist(), paths)
        scored.append((matches, column in ID_NAMES, column))
    best = max(scored, default=(0, False, None))
    return (best[2], best[0]) if best[0] >= max(1, len(sample) // 2) else (None, 0)


def _labels(finding: Finding, frame: pd.DataFrame, sample: Path | None) -> None:
    used = {finding.fields.get("id_col", "id")} | set(re.findall(r"{(\w+)}", finding.fields.get("image_template", "")))
    candidates = [c for c in frame.columns if c not in used and not PIXEL_COLUMN.fullmatch(str(c)) and c != "drawing"]
    if sample is not None and _labels_from_sample(finding, frame, sample, candidates):
        return
    named = [c for c in candidates if c.lower() in LABEL_NAMES]
    chosen = named[:1] or (candidates if len(candidates) == 1 else [])
    if not chosen:
        finding.cannot(f"the label column among {', '.join(candidates) or 'no columns'}", "--label-col")
        return
    why = "named like a label" if named else "the only column besides the id and the image"
    _label_col(finding, frame, chosen, why)


def _label_col(finding: Finding, frame: pd.DataFrame, columns: list[str], why: str) -> None:
    train = finding.fields["train_csv"]
    values = frame[columns[0]] if "*" in train else pd.read_csv(train, usecols=columns[:1], dtype=str).iloc[:, 0]
    kind = "integer" if values.str.fullmatch(r"-?\d+").all() else "text"
    finding.decide("label_col", columns, f"{values.nunique()} values, {kind}, {why}")
    tags = values.str.split()
    if len(columns) == 1 and tags.map(len).gt(1).any():
        distinct = sorted({t for row in tags for t in row})
        shown = ", ".join(distinct[:6]) + (" ..." if len(distinct) > 6 else "")
        finding.decide("multilabel", True, f"space-separated tags in `{columns[0]}` ({len(distinct)}: {shown})")
        finding.decide("submission_format", "tags", "multi-label: space-separated tags per row")


def _labels_from_sample(finding: Finding, frame: pd.DataFrame, sample: Path, candidates: list[str]) -> bool:
    head = pd.read_csv(sample, dtype=str, nrows=50, keep_default_na=False)
    columns, name = list(head.columns[1:]), sample.name
    if columns and all(c in candidates for c in columns):
        _label_col(finding, frame, columns, f"in `{name}`'s header")
        if "submission_format" not in finding.fields:
            finding.decide("submission_format", "label", f"`{name}`: {', '.join(head.columns)}, one label per id")
        return True
    heads = [c for c in candidates if head.iloc[:, 0].str.endswith("_" + c).any()]
    if len(columns) == 1 and len(heads) > 1:
        ordered = [c for c in frame.columns if c in heads]
        finding.decide("label_col", ordered, f"`{name}` has one row per id and head (`{head.iloc[0, 0]}`)")
        finding.decide("submission_format", "long", f"`{name}`: {head.columns[0]}, {columns[0]}")
        return True
    for column in candidates:
        if len(columns) > 2 and set(columns) == set(frame[column]):
            _label_col(finding, frame, [column], f"its {len(columns)} values are `{name}`'s columns")
            finding.decide("submission_format", "probs", f"`{name}` has one column per class")
            return True
    return False


def _test_side(finding: Finding, tables: list[Path], sample: Path | None) -> None:
    fields = finding.fields
    tests = [p for p in tables if "test" in p.stem.lower() and p != sample]
    if tests:
        finding.decide("test_csv", str(tests[0]), "the table named test")
    elif sample is not None:
        finding.decide("test_csv", str(sample), "no test table: the sample submission lists the test ids")
    else:
        finding.cannot("the test table", "--test-csv (src.predict)")
    if sample is not None:
        finding.decide("sample_submission", str(sample), "named sample submission")
    if fields.get("layout") == "images":
        folders = [f for f in finding.image_folders if "test" in f.name.lower()]
        if folders:
            finding.decide("test_image_dir", str(folders[0]), "the image folder named test")
        else:
            finding.cannot("the test images' folder", "--image-dir (src.predict)")
    if fields.get("layout") == "parquet":
        paths = _parquets(finding.folder, "test")
        if paths:
            finding.decide("test_parquet", _pattern(paths), "parquet file(s) named test")


def decide_folds_from(finding: Finding, run: str, uri: str | None = None) -> None:
    """``inspect --folds-from RUN``: trains on the folds of ``RUN`` (a run folder or ``mlflow:<run-id>``,
    `share.resolve_run`), once its ``folds.csv`` is found to hold exactly the ids of the inspected training table
    (read as training reads it, `read_source`): ``folds_from`` and its number of ``folds`` join the finding.

    Raises:
        FileNotFoundError: the run has no ``folds.csv``.
        ValueError: an id of the table its folds lack, or one of its folds the table lacks (the first named, and
            how many), or the table cannot be read with the fields decided so far.
    """
    path = rundir.first_file(share.resolve_run(run, uri), rundir.FOLDS)
    if path is None:
        raise FileNotFoundError(f"--folds-from {run}: no {rundir.FOLDS} (a run folder of src.train, or a fold<k> "
                                "of one)")
    table = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    ids, theirs = read_source(Config.of(**finding.fields).data).ids(), table["id"].tolist()
    train = finding.fields.get("train_csv")
    known, ours = set(theirs), set(ids)
    missing, extra = [i for i in ids if i not in known], [i for i in theirs if i not in ours]
    if missing:
        raise ValueError(f"--folds-from {run}: {len(missing)} of the {len(ids)} ids of {train} are not in its "
                         f"{rundir.FOLDS} (the first: {missing[0]!r}); its folds are of other data")
    if extra:
        raise ValueError(f"--folds-from {run}: its {rundir.FOLDS} holds {len(extra)} ids that {train} lacks (the "
                         f"first: {extra[0]!r}); its folds are of other data")
    count = int(pd.to_numeric(table["fold"]).max()) + 1
    finding.decide("folds_from", run, f"its {rundir.FOLDS} holds exactly the {len(ids)} ids of the training table")
    finding.decide("folds", count, f"the folds of {run}")


def write_train_yaml(finding: Finding) -> Path:
    """Writes ``<folder>/train.yaml``: the decided fields, flat, under comments giving the evidence."""
    lines = ["# Written by `python -m src.kaggle inspect`; every value below was read off the folder:"]
    lines += [f"#   {line}" for line in finding.evidence]
    lines += [f"# Not decided: {line}" for line in finding.undecided]
    body = yaml.safe_dump(finding.fields, sort_keys=False)
    path = finding.folder / TRAIN_YAML
    files.write_text(path, "\n".join(lines) + "\n" + body)
    return path
