"""Time-budgeted cross-validation: ``--fold all --time-budget 9h`` trains what fits in the budget.

Fold 0 trains the configured ``--epochs`` (its learning-rate schedule is set before it starts) and measures the
run's pace: wall seconds per epoch, validation, checkpoints and set-up included (its ``summary.json``). Before
each later fold the plan is made again from the time left and the pace of the folds trained so far:

1. every remaining fold at ``--epochs``, if that fits;
2. else fewer epochs for each (the same for every remaining fold), down to half of ``--epochs``;
3. else as many folds as fit at half the epochs; the others are left out, and ``oof.csv`` covers the folds
   trained (the summary says how many rows).

The plan is logged before each fold. ``--time-limit`` stays the hard stop (a clean stop with the state saved);
the budget plans, the limit enforces. The planner is our own: no library plans epochs against wall time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from src.config import format_duration
from src.tracking import rundir

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Epochs for each of the next ``folds`` folds; ``epoch_s``: the pace it assumes (seconds per epoch)."""

    folds: int
    epochs: int
    epoch_s: float

    def describe(self, left_s: float, configured: int, remaining: int) -> str:
        need = self.folds * self.epochs * self.epoch_s
        what = f"{self.folds} of the {remaining} remaining folds at {self.epochs} epochs"
        cut = "" if (self.folds, self.epochs) == (remaining, configured) else f" (of --epochs {configured})"
        return (
            f"time budget: {format_duration(left_s)} left at {format_duration(self.epoch_s)} per epoch: {what}{cut}, "
            f"about {format_duration(need)}"
        )


def plan(left_s: float, folds: int, epochs: int, epoch_s: float) -> Plan:
    """The plan for ``folds`` remaining folds of ``epochs`` epochs each at ``epoch_s`` seconds per epoch with
    ``left_s`` seconds left (see the module doc); ``folds`` 0 when not even one fold of half the epochs fits."""
    if folds * epochs * epoch_s <= left_s:
        return Plan(folds, epochs, epoch_s)
    fewest = max(1, math.ceil(epochs / 2))
    each = int(left_s // (folds * epoch_s))
    if each >= fewest:
        return Plan(folds, each, epoch_s)
    return Plan(max(0, min(folds, int(left_s // (fewest * epoch_s)))), fewest, epoch_s)  # none when overdue


class Budget:
    """The budget of one ``--fold all`` command (see the module doc).

    Args:
        budget_s: seconds for the whole command, from now.
        folds, epochs: ``--folds`` and ``--epochs``.
        clock: a monotonic clock in seconds (tests pass their own).
    """

    def __init__(self, budget_s: float, folds: int, epochs: int, clock: Callable[[], float] = time.monotonic):
        self.deadline, self.folds, self.epochs, self.clock = clock() + budget_s, folds, epochs, clock
        self.stopped_at: int | None = None

    def epochs_for(self, fold: int, run_dir: Path) -> int | None:
        """Epochs for ``fold`` (0-based), or None to leave it and the later folds out."""
        if self.stopped_at is not None:
            return None
        trained = [rundir.read_summary(rundir.fold_dir(run_dir, k)) for k in range(fold)]
        epochs = sum(s.get("epochs_run") or 0 for s in trained)
        if not epochs:  # nothing measured yet: this fold measures the pace
            logger.info("time budget: fold %d trains %d epochs and measures the pace", fold, self.epochs)
            return self.epochs
        epoch_s = sum(s.get("wall_time_s") or 0 for s in trained) / epochs
        left_s, remaining = self.deadline - self.clock(), self.folds - fold
        chosen = plan(left_s, remaining, self.epochs, epoch_s)
        logger.info(chosen.describe(left_s, self.epochs, remaining))
        if chosen.folds == 0:
            self.stopped_at = fold
            logger.warning("time budget: folds %d-%d left out; oof.csv covers the folds trained", fold, self.folds - 1)
            return None
        return chosen.epochs
