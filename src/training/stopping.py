"""Clean stops: a signal (SIGTERM, SIGINT, SIGUSR1) or ``--time-limit`` saves the training state at the next
iteration boundary and ends the run with a message naming the command that continues it; ``--checkpoint-every``
saves it inside epochs. Signal handling and the time margin are ours: ignite has `Engine.terminate` and
`Checkpoint`, which these handlers call, but nothing that listens for signals or plans around a deadline.

With several processes they decide together (the largest request of any process wins), every ``log_every``
iterations, which is when they already wait for each other.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from src.config import RunConfig
from src.training.checkpoints import save_state
from src.utils import distributed
from src.utils.errors import CleanExit

logger = logging.getLogger(__name__)
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))
TIME_LIMIT_EXIT = 75  # EX_TEMPFAIL: stopped before the time limit; running the command again continues
MARGIN_FACTOR, MARGIN_S = 1.5, 1.0  # margin = 1.5 x the longest interval between two checks + 1 s


class Stopped(CleanExit):
    """The run stopped cleanly after saving its training state; running the same command continues it.

    Attributes:
        reason: what stopped it ("SIGTERM", "the time limit 11h30m").
        exit_code: 128 + the signal's number, or `TIME_LIMIT_EXIT`.
        run_dir: the run folder whose state is saved (a fold's, with ``--fold all``), or None.
        position: "epoch 3, iteration 1234", or None (between folds).
        command: the command line that continues the run (filled in by `src.train`).
    """

    def __init__(self, reason: str, exit_code: int, run_dir: Path | None = None, position: str | None = None):
        super().__init__(reason)
        self.reason, self.exit_code, self.run_dir, self.position, self.command = (
            reason,
            exit_code,
            run_dir,
            position,
            "",
        )

    def message(self) -> str:
        saved = ""
        if self.position:
            saved = f"; the training state of {self.run_dir} at {self.position} is saved" if self.run_dir else ""
            saved = saved or f" at {self.position} (a dry run: nothing saved)"
        again = f"; continue with: {self.command}" if self.command else "; run the same command again to continue"
        return f"stopped by {self.reason}{saved}{again}"


class StopRequests:
    """Requests to stop: the signals received and the ``--time-limit`` deadline, with the margin it needs.

    A context manager: entering installs the signal handlers (in the main thread; elsewhere there are none),
    leaving restores the previous ones. The first signal asks for a clean stop; a second Ctrl-C stops at once
    (``KeyboardInterrupt``; the files written so far stay intact, `src.utils.files`).

    Args:
        time_limit_s: seconds from now to stop before, or None.
        clock: a monotonic clock in seconds (tests pass their own).
    """

    def __init__(
        self, time_limit_s: float | None = None, label: str | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.clock = clock
        self.deadline = None if time_limit_s is None else clock() + time_limit_s
        self.label = label or f"{time_limit_s} s"
        self.signal: int | None = None
        self.longest_interval = 0.0  # between two checks, validations and saves included
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._receive) for sig in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _receive(self, signum: int, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        os.write(2, f"\n{signal.Signals(signum).name}: saving and stopping at the next iteration boundary\n".encode())

    def margin(self) -> float:
        """Seconds kept free before the deadline: enough for the longest interval seen between two checks."""
        return MARGIN_FACTOR * self.longest_interval + MARGIN_S

    def code(self) -> int:
        """0: go on; a signal's number; or -1: the deadline is within the margin."""
        if self.signal is not None:
            return self.signal
        if self.deadline is not None and self.clock() + self.margin() >= self.deadline:
            return -1
        return 0

    def stopped(self, code: int, run_dir: Path | None = None, position: str | None = None) -> Stopped:
        if code > 0:
            return Stopped(signal.Signals(code).name, 128 + code, run_dir, position)
        return Stopped(f"the time limit {self.label}", TIME_LIMIT_EXIT, run_dir, position)

    def check_between(self, run_dir: Path | None = None) -> None:
        """Between folds: stops before the next one starts if asked to.

        Raises:
            Stopped: a signal arrived, or the deadline is within the margin.
        """
        code = _agreed(self.code(), 0)[0]
        if code:
            raise self.stopped(code, run_dir)


def _agreed(stop: int, save: int) -> tuple[int, int]:
    """The largest stop code and save request over all processes (a signal outranks the time limit's -1)."""
    if distributed.world_size() == 1:
        return stop, save
    rank_stop = 1000 if stop == -1 else stop  # MAX: signals (< 100) win over nothing (0); the deadline is 1000
    values = idist.all_reduce(torch.tensor([float(rank_stop), float(save)], device=idist.device()), op="MAX")
    stop, save = (int(v) for v in values.tolist())
    return (-1 if stop == 1000 else stop), save


def attach_stopping(
    trainer: Engine,
    requests: StopRequests,
    last: Checkpoint | None,
    run_dir: Path | None,
    accumulation_steps: int,
    run: RunConfig,
) -> None:
    """Checks after optimizer steps (and at epoch ends, after the validation and the epoch's save) whether to save
    the training state (``--checkpoint-every`` in ``checkpoint_steps`` or ``checkpoint_seconds``) or to stop;
    stopping saves first. Attach it after every other handler of these events, so that the saved state includes
    what they did at this iteration.

    Args:
        trainer: the trainer.
        requests: the run's `StopRequests`.
        last: the last-state handler (`src.training.checkpoints.attach_last_checkpoint`); None: no run folder, stop
            only.
        run_dir: the run folder (named in the message), or None.
        accumulation_steps: micro-batches per optimizer step (the checks come after optimizer steps only).
        run: ``checkpoint_every`` (in optimizer steps or seconds) and ``log_every`` (with several processes, the
            checks come every this many iterations).
    """
    state = {"last_check": requests.clock(), "last_save": requests.clock()}
    sync_every = run.log_every if distributed.world_size() > 1 else 1
    checkpoint_steps, checkpoint_seconds = run.checkpoint_steps, run.checkpoint_seconds

    def at_boundary(engine: Engine, iteration: int) -> bool:
        in_epoch = (iteration - 1) % engine.state.epoch_length + 1
        at_epoch_end = in_epoch == engine.state.epoch_length  # decided after the epoch's validation instead
        return iteration % accumulation_steps == 0 and iteration % sync_every == 0 and not at_epoch_end

    def check(engine: Engine, epoch_end: bool = False) -> None:
        now = requests.clock()
        requests.longest_interval = max(requests.longest_interval, now - state["last_check"])
        state["last_check"] = now
        if epoch_end:
            state["last_save"] = now  # the epoch's own checkpoint was just saved
        steps_due = checkpoint_steps and engine.state.iteration % (checkpoint_steps * accumulation_steps) == 0
        time_due = checkpoint_seconds and now - state["last_save"] >= checkpoint_seconds
        stop, save = _agreed(requests.code(), int(bool(steps_due or time_due)))
        if last is not None and (save or stop) and not epoch_end:
            save_state(engine, last)
            state["last_save"] = requests.clock()
        if stop:
            position = f"epoch {engine.state.epoch}, iteration {engine.state.iteration}"
            engine.state.stopped = requests.stopped(stop, run_dir, position)
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=at_boundary), check)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, check, True)
