"""The notes log the runs write themselves: one Markdown entry per finished, stopped or crashed run.

The lab notebook of a competition ("Notes as progress"): each entry holds the date, the run, the command line, the
code's git commit, the settings that differ from the defaults, the score, the wall time and the user's own
``--note``. Entries are appended under an exclusive lock (``fcntl.flock``) in one write, so two runs that finish
at once never interleave their lines, and a crash while appending leaves every earlier entry as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

try:  # POSIX; elsewhere appends are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

HEADER = "# Notes\n\nOne entry per run, appended by `python -m src.train` (`--no-notes` to skip, `--note` for yours).\n"


def append(path: str | Path, entry: str) -> None:
    """Appends ``entry`` (Markdown, ending in a blank line) to the notes file ``path``, creating it (and its folder)
    with a header; locked, in one write.

    Raises:
        OSError: the file cannot be written (the caller logs it: a notes entry never breaks a run).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as notes:
        if fcntl is not None:
            fcntl.flock(notes, fcntl.LOCK_EX)  # released when the file is closed
        text = ("" if notes.tell() else HEADER + "\n") + entry.rstrip("\n") + "\n\n"
        notes.write(text)
        notes.flush()
        os.fsync(notes.fileno())


def git_state(folder: str | Path | None = None) -> str:
    """The code's git commit, short, with ``(dirty)`` when tracked files differ from it: ``1a2b3c4 (dirty)``; or
    ``not a git checkout``. ``folder``: where to ask (default: the folder holding this package)."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return f"{commit} (dirty)" if dirty else commit
    return "not a git checkout"
