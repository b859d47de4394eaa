"""Whether a process recorded by number (a run's ``status.json``, a sweep trial's worker) still exists."""

from __future__ import annotations

import os
from typing import Any


def alive(pid: Any) -> bool:
    """Whether process ``pid`` (an int) exists on this host; another user's process counts (PermissionError)."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that number
        return True
    return True
