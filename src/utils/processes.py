"""Whether a process recorded by number (a run's ``status.json``, a sweep trial's worker) still exists."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def alive(pid: Any, started: Any = None) -> bool:
    """Whether process ``pid`` (an int) exists on this host; another user's process counts (PermissionError). With
    ``started`` (its `start_time` when recorded), a process that reuses the number (a restarted container's worker)
    is not the recorded one."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that number
        return True
    return started is None or start_time(pid) in (None, started)


def start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of Linux's ``/proc/<pid>/stat``); None
    where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])
