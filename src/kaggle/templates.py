"""Which image files belong to a row: the ``--image-template`` (and ``--channels``) read off the files themselves.

Our own code (no library maps a competition's table to its file names): for a sample of rows, the files whose
path holds the row's id as a whole word are found, the id and the row's other values that name a whole folder
are replaced by ``{id}`` / ``{column}``, and where one row has several files that differ in one place (Recursion:
``_w1`` ... ``_w6``) that place becomes ``{channel}``. The template is kept only if it names existing files for
every sampled row.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
SAMPLE_ROWS = 20


@dataclasses.dataclass(frozen=True)
class Template:
    """An image template that names existing files: `template` under the image folder, `channels` or None."""

    template: str
    channels: tuple[str, ...] | None
    found: int
    sampled: int
    example: str


def image_files(root: Path) -> list[str]:
    """The image files under ``root``, as paths relative to it with '/' separators, sorted."""
    found = []
    for folder, _, names in os.walk(root):
        rel = os.path.relpath(folder, root)
        found += [(n if rel == "." else f"{rel}/{n}").replace(os.sep, "/") for n in names if _is_image(n)]
    return sorted(found)


def image_folders(root: Path) -> dict[Path, int]:
    """How many image files each folder directly under ``root`` holds (at any depth), and ``root`` itself (its own
    files only); folders without images are left out."""
    counts: dict[Path, int] = {}
    for folder, _, names in os.walk(root):
        n = sum(map(_is_image, names))
        if not n:
            continue
        rel = Path(folder).relative_to(root).parts
        top = root / rel[0] if rel else root
        counts[top] = counts.get(top, 0) + n
    return counts


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _word(value: str) -> re.Pattern:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])")


def id_matches(values: Sequence[str], files: Sequence[str]) -> int:
    """How many of ``values`` occur as a whole word in the name of some file of ``files``."""
    names = [f.rsplit("/", 1)[-1] for f in files]
    stems = {n.rsplit(".", 1)[0] for n in names}
    return sum(1 for v in values if v in stems or any(_word(v).search(n) for n in names))


def infer(table: pd.DataFrame, id_col: str, files: Sequence[str], root: Path) -> Template | None:
    """The template that names ``files`` (under ``root``) for the rows of ``table``, or None if none fits.

    Args:
        table: the training rows, every column as text.
        id_col: the column of ids that occur in the file names.
        files: `image_files` of ``root``.
    """
    rows = [_fields(row, id_col) for _, row in table.head(SAMPLE_ROWS).iterrows()]
    candidates = set()
    for fields in rows:
        candidate = _row_template(fields, files)
        if candidate is None:
            return None
        candidates.add(candidate)
    for template, channels in sorted(candidates, key=lambda c: (-len(c[1] or ()), c[0])):
        found = sum(1 for fields in rows if _all_exist(root, template, fields, channels))
        if found == len(rows):
            example = template.format(**rows[0], channel=(channels or ("",))[0])
            return Template(template, channels, found, len(rows), example)
    return None


def _fields(row: pd.Series, id_col: str) -> dict[str, str]:
    """The row's columns as template fields, ``{id}`` the id column's value."""
    return {str(k): str(v) for k, v in row.items() if str(k).isidentifier()} | {"id": str(row[id_col])}


def _all_exist(root: Path, template: str, fields: dict[str, str], channels: tuple[str, ...] | None) -> bool:
    return all((root / template.format(**fields, channel=c)).is_file() for c in (channels or ("",)))


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _row_template(fields: dict[str, str], files: Sequence[str]) -> tuple[str, tuple[str, ...] | None] | None:
    image_id, pattern = fields["id"], _word(fields["id"])
    # `in` first: a plain substring test is ~20x cheaper than the regex, and a whole word is a substring
    matched = [f for f in files if image_id in f and pattern.search(f.rsplit("/", 1)[-1])]
    if not matched:
        return None
    shapes = [_generalise(path, fields) for path in matched]
    if len(set(shapes)) == 1:
        return shapes[0], None
    return _channel_template(shapes)


def _generalise(path: str, fields: dict[str, str]) -> str:
    """``path`` with the id in the file name as ``{id}`` and each folder named by a column's value as ``{column}``."""
    *folders, name = path.split("/")
    others = {k: v for k, v in fields.items() if k != "id" and v}
    parts = [next((f"{{{k}}}" for k, v in others.items() if v == part), _escape(part)) for part in folders]
    return "/".join([*parts, _word(_escape(fields["id"])).sub("{id}", _escape(name), count=1)])


def _channel_template(shapes: list[str]) -> tuple[str, tuple[str, ...]] | None:
    """One template with ``{channel}`` where the row's file paths differ (at a word boundary), or None."""
    prefix = os.path.commonprefix(shapes)
    while prefix and prefix[-1].isalnum():
        prefix = prefix[:-1]
    suffix = os.path.commonprefix([s[len(prefix) :][::-1] for s in shapes])[::-1]
    middles = [s[len(prefix) : len(s) - len(suffix)] for s in shapes]
    if any(not m.isalnum() for m in middles) or len(set(middles)) != len(middles):
        return None
    head = re.match(r"[A-Za-z]*", os.path.commonprefix(middles)).group()
    channels = [m[len(head) :] for m in middles]
    if not all(channels):
        return None
    return prefix + head + "{channel}" + suffix, tuple(sorted(channels, key=lambda c: (len(c), c)))
