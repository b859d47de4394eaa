"""Atomic file writes: a file is written under a temporary name in its folder and renamed over the old one, so a
crash, kill or Ctrl-C leaves either the old file or the new one, never half of one (``os.replace`` is atomic on
POSIX and Windows within one file system).

A kill (SIGKILL, a lost machine) inside a write leaves its temporary file behind: ``.<name>.<8 random>.tmp``
(`atomic_path`), or ``tmp<8 random>`` from ignite's `DiskSaver` before checkpoints were written here.
`remove_leftovers` removes them when the run goes on; nothing else in a folder has those names.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

_RANDOM = r"[a-z0-9_]{8}"  # tempfile's names: 8 characters of this alphabet
TEMPORARY = re.compile(rf"\..+\.{_RANDOM}\.tmp")
"""The names `atomic_path` writes under."""
IGNITE_TEMPORARY = re.compile(rf"tmp{_RANDOM}")
"""The names ignite's `DiskSaver` wrote checkpoints under (``tempfile.NamedTemporaryFile`` in the folder)."""
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format: one of ignite's is recognised by its content too


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block ends without an error,
    removed otherwise."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def leftovers(folder: str | Path) -> list[Path]:
    """The temporary files of interrupted writes in ``folder`` (not its sub-folders): `atomic_path`'s, and ignite's
    checkpoint files (empty or a torch.save archive)."""
    found = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if not path.is_file() or path.is_symlink():
            continue
        if TEMPORARY.fullmatch(path.name) or (IGNITE_TEMPORARY.fullmatch(path.name) and _zip_or_empty(path)):
            found.append(path)
    return found


def _zip_or_empty(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(len(ZIP_MAGIC))
    return ZIP_MAGIC.startswith(head)  # b"" and a cut header included


def remove_leftovers(folder: str | Path) -> tuple[int, int]:
    """Removes `leftovers` of ``folder``. Returns (how many files, how many bytes) were removed."""
    count = size = 0
    for path in leftovers(folder):
        with contextlib.suppress(FileNotFoundError):
            bytes_ = path.stat().st_size
            path.unlink()
            count, size = count + 1, size + bytes_
    return count, size


def format_size(size: float) -> str:
    """``233.4 MB``: bytes for people (powers of 1000)."""
    units, power = ("bytes", "kB", "MB", "GB", "TB"), 0
    while size >= 1000 and power < len(units) - 1:
        size, power = size / 1000, power + 1
    return f"{size:.0f} bytes" if power == 0 else f"{size:.1f} {units[power]}"


def write_text(path: str | Path, text: str) -> None:
    """``Path.write_text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """``frame.to_csv(path, index=False)``, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def sha256(path: str | Path) -> str:
    """The file's sha256, hex (`hashlib.file_digest`, read in blocks)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
