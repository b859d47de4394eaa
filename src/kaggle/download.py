"""``python -m src.kaggle download <competition>``: the competition's files, unzipped, continuing where an
interrupted download or extraction stopped (files already there with the listed size are kept)."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from src.kaggle.client import calling


def listed_files(api, competition: str) -> dict[str, int]:
    """The competition's files: name (a path inside the competition) -> size in bytes, over all pages."""
    sizes: dict[str, int] = {}
    token = None
    with calling(competition):
        while True:
            response = api.competition_list_files(competition, page_token=token, page_size=200)
            sizes |= {f.name: int(f.total_bytes or 0) for f in response.files or []}
            token = response.next_page_token
            if not token:
                return sizes


def missing_files(sizes: dict[str, int], out: Path) -> list[str]:
    """The listed files not in ``out`` with their listed size."""
    return [name for name, size in sizes.items() if not _complete(out / name, size)]


def _complete(path: Path, size: int) -> bool:
    return path.is_file() and (not size or path.stat().st_size == size)


def download(api, competition: str, out: Path) -> list[str]:
    """Downloads and unzips what is missing of ``competition`` into ``out``; returns the names extracted.

    The archive is the library's resumable download of all files; a member already extracted with its size is
    skipped, every other is written to a temporary name and renamed, so a killed extraction leaves no partial
    file under a real name. The archive is removed once every member is out.

    Raises:
        ValueError: an API error (`calling`), or an archive member that would land outside ``out``.
    """
    sizes = listed_files(api, competition)  # first: a refused or unknown competition makes no folder
    out.mkdir(parents=True, exist_ok=True)
    missing = missing_files(sizes, out)
    if not missing:
        print(f"{competition}: all {len(sizes)} files already in {out}")
        return []
    print(f"{competition}: {len(missing)} of {len(sizes)} files to fetch into {out}")
    with calling(competition):
        api.competition_download_files(competition, path=str(out), quiet=False)
    archive = out / f"{competition}.zip"
    extracted = extract(archive, out)
    archive.unlink()
    return extracted


def extract(archive: Path, out: Path) -> list[str]:
    """Extracts the members of ``archive`` that are not already in ``out`` with their size (see `download`)."""
    done = []
    root = out.resolve()
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            target = (out / member.filename).resolve()
            if not target.is_relative_to(root):
                raise ValueError(f"{archive}: member {member.filename!r} would be written outside {out}")
            if member.is_dir() or _complete(target, member.file_size):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            with zipped.open(member) as source, open(partial, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            os.replace(partial, target)
            done.append(member.filename)
    return done
