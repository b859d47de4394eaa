"""What the output commands (predict, ensemble, soup, the Kaggle bundle) share so that a refused or failed command
changes nothing: a run's weights read with a one-line error (`read_weights`), an output folder checked before the
work (`check_folder`), and outputs written under temporary names and moved into place together only when the whole
command has succeeded (`replacing` for files, `replacing_folder` for a folder built whole).

Temporary names start with ``.<name>.`` and end with ``.tmp`` (as `src.utils.files.atomic_path`'s), beside their target:
the renames stay within one file system, and what a killed command leaves is recognisable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch


def read_weights(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """A saved state dict (``best_model_*.pt``), loaded with ``weights_only=True``.

    Args:
        path: the weights file.
        map_location: where the tensors go.
        mmap: map the file instead of reading it (a cheap check that it opens: its tensors are not read).

    Raises:
        ValueError: the file cannot be read (truncated, corrupt, not a torch file) or holds no state dict; the
            message names the file.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
        reason = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: cannot be read, truncated or corrupt ({reason}); copy or train it again") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict of model weights")
    return state


def check_folder(path: str | Path, flag: str) -> None:
    """Checks that ``path`` can be an output folder: a folder, or nothing yet under folders.

    Raises:
        ValueError: ``path`` or one of its parents is a file (the message names ``flag``).
    """
    for part in [Path(path), *Path(path).parents]:
        if part.exists() and not part.is_dir():
            raise ValueError(f"{flag} {path}: {part} is a file, not a folder; give a folder for the outputs")


@contextlib.contextmanager
def replacing(paths: Sequence[str | Path]) -> Iterator[list[Path]]:
    """Temporary files, one beside each of ``paths``, to write a command's outputs to. When the block ends without
    an error, each is renamed over its path (``os.replace``, atomic), after all of them are written; otherwise they
    are removed, and so are the folders made for them: the earlier outputs stay as they were.

    Yields:
        The temporary paths, in the order of ``paths`` (empty files).
    """
    paths = [Path(p) for p in paths]
    made = _make_folders({p.parent for p in paths})
    temps: list[Path] = []
    try:
        for path in paths:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            temps.append(Path(name))
        yield temps
        for temp, path in zip(temps, paths):
            os.replace(temp, path)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        _remove_empty(made)
        raise


@contextlib.contextmanager
def replacing_folder(folder: str | Path, stale: Sequence[str] = ()) -> Iterator[Path]:
    """A new temporary folder to build ``folder`` in. When the block ends without an error it becomes ``folder``:
    renamed to it when ``folder`` is new; otherwise each of its entries replaces the entry of the same name (a
    sub-folder whole, a file by ``os.replace``), and the files of ``folder`` matching the glob patterns ``stale``
    (relative to it: earlier outputs that the new build does not hold, e.g. ``fold*/best_model_*.pt``) are removed.
    Other files of ``folder`` are kept. On an error the temporary folder is removed: ``folder`` stays as it was, and
    a new one is not made.

    Yields:
        The temporary folder, empty.
    """
    folder = Path(folder)
    anchor = next(p for p in folder.parents if p.exists())  # the temporary folder goes where it can be renamed from
    build = Path(tempfile.mkdtemp(dir=anchor, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        yield build
        if not folder.exists():
            made = _make_folders({folder.parent})
            try:
                os.rename(build, folder)
            except BaseException:
                _remove_empty(made)
                raise
            return
        built = {str(p.relative_to(build)) for p in build.rglob("*")}
        for entry in sorted(build.iterdir()):
            _replace_entry(entry, folder / entry.name)
        for pattern in stale:  # after the new files are in place: a failure above leaves the earlier ones
            for old in folder.glob(pattern):
                if old.is_file() and str(old.relative_to(folder)) not in built:
                    old.unlink()
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _replace_entry(new: Path, target: Path) -> None:
    """``new`` in place of ``target``: a folder whole (the old one renamed away, then removed), a file by
    ``os.replace``."""
    if not new.is_dir() or not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _make_folders(folders: set[Path]) -> list[Path]:
    """Makes the missing ``folders`` (and their parents); returns those made, parents first."""
    made: list[Path] = []
    for folder in sorted(folders):
        missing = [p for p in [folder, *folder.parents] if not p.exists()][::-1]
        for path in missing:
            path.mkdir(exist_ok=True)
            made.append(path)
    return made


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()
