"""What a training command tells when it ends: the run folder's ``status.json``, the notes log entry
(`src.tracking.notes`) and the notifications (`src.tracking.notify`).

`RunReport` wraps one command (`src.train.command`): the run marks itself ``running`` when its folder is written
(`RunReport.started`, after every check: a refused command reports nothing), and when the command ends, however it
ends, the report writes the final status (``finished``, ``stopped`` by a signal or the time limit, or ``crashed``
with the error's last line), appends the notes entry and sends the messages, on rank 0 only. The status of a run
that had finished is replaced only by another ``finished``: a continuation that fails leaves it as it was. The notes
log lies beside the run folder (``--notes-file`` elsewhere), wherever the command runs from. A run killed outright
(SIGKILL, the OOM killer, a lost machine) cannot write anything: its status stays ``running`` with the process and
host that ran it, and `src.runs` shows it as crashed once that process is gone. Nothing here can break the run: a
failure to write or to send is logged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import traceback
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from src.config import Config, format_duration
from src.tracking import notes, notify, rundir
from src.utils import distributed
from src.utils.errors import CleanExit

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Outcome:
    """How a run ended, for the notes entry and the messages.

    Attributes:
        status: ``finished``, ``stopped`` or ``crashed``.
        run_dir: the run folder (of ``--fold all``: the folder of every fold).
        summary: ``summary.json``'s or ``cv_summary.json``'s content (empty when it did not finish).
        wall_time_s: seconds from the command's start to its end.
        detail: crashed: the error's last line; stopped: what stopped it and the command that continues it.
    """

    status: str
    run_dir: Path
    summary: Mapping[str, Any]
    wall_time_s: float
    detail: str = ""

    @property
    def score(self) -> str:
        """``best valid_accuracy 0.9812 at epoch 9`` or ``OOF accuracy 0.9790 (folds 0.9801 +- 0.0040)``, or ``""``."""
        s = self.summary
        if s.get("oof_score") is not None:
            return f"OOF {s['metric']} {s['oof_score']:.4f} (folds {s['mean']:.4f} +- {s['std']:.4f})"
        if s.get("best_valid_score") is not None:
            return f"best {s['selected_by']} {s['best_valid_score']:.4f} at epoch {s['best_epoch']}"
        return ""

    @property
    def title(self) -> str:
        """One line: ``finished: <run>: best valid_accuracy 0.9812 at epoch 9``."""
        early = self.summary.get("stopped_early_at_epoch")
        status = f"{self.status} (early stopping at epoch {early})" if early else self.status
        return f"{status}: {self.run_dir.name}" + (f": {self.score}" if self.score else "")

    def lines(self) -> list[str]:
        """The message body: score, epochs and speed, wall time, run folder, and the error or the stop."""
        s = self.summary
        speed = f", {s['train_images_per_s']} train images/s" if s.get("train_images_per_s") else ""
        epochs = f"{s['epochs_run']} epoch{'s' * (s['epochs_run'] != 1)}{speed}, " if s.get("epochs_run") else ""
        lines = [self.score] if self.score else []
        lines.append(f"{epochs}wall time {format_duration(self.wall_time_s)}; run folder {self.run_dir}")
        if self.detail:
            lines.append(("error: " if self.status == "crashed" else "") + self.detail)
        return lines


class RunReport:
    """A context manager around one training command that reports how it ended (see the module doc).

    Args:
        config: the command's config (its ``track`` group says where to write and send).
        command_line: the command as typed (for the notes entry and ``status.json``).

    Everything it writes or sends (``status.json``, the notes entry, the notifications) names the ``--notify``
    webhooks without their secret paths (`src.tracking.notify.redact`); the run's ``config.yaml`` keeps them whole.
    """

    def __init__(self, config: Config, command_line: str):
        self.config = config
        self.command_line = self._scrub(command_line)
        self.run_dir: Path | None = None
        self.summary: Mapping[str, Any] = {}
        self._started_at = time.monotonic()
        self._status: dict[str, Any] = {}
        self._had_finished = False

    def started(self, run_dir: Path) -> None:
        """The run's folder is written: marks it ``running``, unless it had finished (its status then changes only
        when it finishes again). The first folder named is the one reported."""
        if self.run_dir is not None:
            return
        self.run_dir = Path(run_dir)
        self._had_finished = bool(rundir.read_summary(self.run_dir))
        self._status = {
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now().isoformat(timespec="seconds"),
            "command": self.command_line,
            "commit": notes.git_state(),
            "note": self.config.track.note,
        }
        if not self._had_finished:
            self._write_status()

    def __enter__(self) -> RunReport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self.run_dir is None or not distributed.is_main():
            return False  # a dry run, or it ended before its folder existed: nothing to report
        outcome = Outcome(
            status=status_of(error),
            run_dir=self.run_dir,
            summary=self.summary or rundir.read_summary(self.run_dir),
            wall_time_s=time.monotonic() - self._started_at,
            detail=self._scrub(detail_of(error)),
        )
        self._status.update(
            status=outcome.status, ended_at=datetime.now().isoformat(timespec="seconds"), detail=outcome.detail
        )
        if outcome.status == "finished" or not self._had_finished:
            self._write_status()
        track = self.config.track
        if track.notes:
            self._append_notes(outcome)
        if track.notify:
            notify.send(track.notify, outcome.title, "\n".join(outcome.lines()), fields=self._fields(outcome))
        return False

    def _write_status(self) -> None:
        try:
            rundir.write_status(self.run_dir, self._status)
        except OSError as error:
            logger.warning("could not write %s in %s: %s", rundir.STATUS, self.run_dir, error)

    def _append_notes(self, outcome: Outcome) -> None:
        path = Path(self.config.track.notes_file or self.run_dir.parent / "NOTES.md")  # beside the run folder
        try:
            notes.append(path, self.entry(outcome))
        except OSError as error:
            logger.warning("could not append the notes entry to %s: %s", path, error)

    def entry(self, outcome: Outcome) -> str:
        """The run's notes entry (Markdown)."""
        changed = rundir.changed_settings(self.config)
        settings = ", ".join(f"`{k}={_value(v)}`" for k, v in changed.items()) or "none (the default recipe)"
        lines = [
            f"## {datetime.now():%Y-%m-%d %H:%M} {outcome.run_dir.name}: {outcome.status}",
            "",
            f"- command: `{self.command_line}`",
            f"- code: {self._status.get('commit') or notes.git_state()}",
            f"- settings changed from the defaults: {settings}",
            *(f"- {line}" for line in outcome.lines()),
        ]
        if self.config.track.note:
            lines.append(f"- note: {self.config.track.note}")
        return self._scrub("\n".join(lines))

    def _scrub(self, text: str) -> str:
        """``text`` with every ``--notify`` target as it may be logged (a webhook without its secret path)."""
        for target in self.config.track.notify or ():
            text = text.replace(target, notify.redact(target))
        return text

    def _fields(self, outcome: Outcome) -> dict[str, Any]:
        return {
            "status": outcome.status,
            "run": outcome.run_dir.name,
            "run_dir": str(outcome.run_dir),
            "wall_time_s": round(outcome.wall_time_s, 1),
            "summary": dict(outcome.summary),
            "detail": outcome.detail,
        }


def status_of(error: BaseException | None) -> str:
    """``finished`` (no error), ``stopped`` (a clean stop, `src.training.stopping.Stopped`), ``pruned`` (by a sweep's
    pruner, `src.utils.errors.Pruned`) or ``crashed``."""
    if error is None:
        return "finished"
    return error.status if isinstance(error, CleanExit) else "crashed"


def detail_of(error: BaseException | None) -> str:
    """The error's last line (``KeyboardInterrupt``, ``ValueError: ...``), or a clean stop's message."""
    if error is None:
        return ""
    if isinstance(error, CleanExit):
        return error.message()
    last = traceback.format_exception_only(type(error), error)[-1].strip()
    return last.splitlines()[-1] if last else type(error).__name__


def _value(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
