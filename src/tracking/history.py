"""The run's history: one row of metrics per epoch, kept in memory and in ``history.csv``."""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from src.utils import files

logger = logging.getLogger(__name__)
TIME_COLUMNS = ("epoch_time_s", "train_images_per_s", "train_images_per_s_steady")
"""The history's wall-time columns: they differ between two runs that are otherwise the same."""
STEADY_SKIP = 10  # iterations at the start of each epoch left out of the steady-state pace (at most a quarter)


class History:
    """Per-epoch metrics, kept in memory and, with a path, appended to a CSV file (one row per epoch).

    On resume the rows already in the file are read back, so the summary covers the whole run.
    """

    def __init__(self, path: Path | None = None):
        self.path = path
        self.rows: list[dict] = read_rows(path) if path is not None and path.is_file() else []

    def record(self, row: dict) -> None:
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]  # a resumed epoch replaces its row
        if self.path is not None:  # rewritten whole and renamed into place: a kill never leaves half a file
            with files.atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                writer.writeheader()
                writer.writerows(self.rows)

    def best(self, key: str = "valid_accuracy", higher_is_better: bool = True) -> dict | None:
        """The row with the best ``key`` (highest, or lowest when not ``higher_is_better``; the earliest one on
        ties), or None before the first epoch."""
        sign = 1 if higher_is_better else -1
        return max(self.rows, key=lambda r: sign * r[key]) if self.rows else None

    def mean(self, key: str) -> float:
        """The mean of ``key`` over the rows that have it (0 without any)."""
        values = [r[key] for r in self.rows if r.get(key) is not None]
        return sum(values) / max(len(values), 1)


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``history.csv``, numbers typed.

    Raises:
        ValueError: a damaged file (cut short by a copy or a full disk: `History.record` only ever renames a
            whole file into place): the line cut or the value that is not a number.
    """
    text = Path(path).read_text()
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        raise ValueError(
            f"{path}: line {len(lines)} is cut short (it ends {_shorten(lines[-1])!r}); delete that line to continue "
            "the run (its epoch's row is lost), or pass --restart to train the run over"
        )
    rows = []
    reader = csv.DictReader(lines)
    for line, row in enumerate(reader, start=2):
        if None in row or None in row.values():  # more or fewer values than the header has columns
            raise ValueError(
                f"{path}: line {line} holds {len(lines[line - 1].split(','))} values for {len(reader.fieldnames)} "
                "columns; delete that line to continue the run (its epoch's row is lost), or pass --restart to "
                "train the run over"
            )
        try:
            rows.append({k: _number(v) for k, v in row.items()})
        except ValueError:
            name, value = next((k, v) for k, v in row.items() if not _is_number(v))
            raise ValueError(f"{path}: line {line}, column {name}: {value!r} is not a number") from None
    return rows


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else "..." + text[-width:]


def _is_number(text: str) -> bool:
    try:
        _number(text)
    except ValueError:
        return False
    return True


def _number(text: str) -> float | int | None:
    if text == "":  # a metric that was not computed that epoch (e.g. SWA before it starts)
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


class SteadyPace:
    """Training images per second of each epoch in the steady state: from the end of the epoch's first
    `STEADY_SKIP` iterations (at most a quarter of it: worker start-up, cuDNN's autotuning, compilation) to the end
    of its last one, less the time the evaluators ran in between (``--val-every``). Each mark waits for the GPU,
    twice per epoch, so the time is the device's, not how far ahead the host ran.

    Args:
        trainer: the training engine.
        evaluators: the evaluators whose runs inside the epoch are left out.
        device: the training device.
    """

    def __init__(self, trainer: Engine, evaluators: dict[str, Engine], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.done = self.counted = 0
        self.start = self.end = self.evaluating = math.nan
        trainer.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        for evaluator in evaluators.values():
            evaluator.add_event_handler(Events.COMPLETED, self._evaluated)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _epoch_started(self, engine: Engine) -> None:
        self.done, self.start, self.end, self.evaluating = 0, math.nan, math.nan, 0.0

    def _iteration_completed(self, engine: Engine) -> None:
        self.done += 1
        skip = min(STEADY_SKIP, engine.state.epoch_length // 4)
        if self.done == max(skip, 1):
            self.start, self.evaluating, self.counted = self._now(), 0.0, 0
        elif engine.state.iteration % engine.state.epoch_length == 0:
            self.end = self._now()
        self.counted += self.done > max(skip, 1)

    def _evaluated(self, evaluator: Engine) -> None:
        if not math.isnan(self.start) and math.isnan(self.end):  # inside the measured stretch
            self.evaluating += evaluator.state.times[Events.COMPLETED.name] or 0.0

    def images_per_s(self, images_per_iteration: int) -> float | None:
        """The epoch's steady pace, or None when it had too few iterations to measure one."""
        seconds = self.end - self.start - self.evaluating
        if not self.counted or not seconds > 0:
            return None
        return self.counted * images_per_iteration / seconds


def attach_history(
    trainer: Engine,
    evaluators: dict[str, Engine],
    optimizer: torch.optim.Optimizer,
    history: History,
    img_size: Callable[[], int] | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """After the epoch's evaluations, records and logs one row: epoch, lr, (image size), losses, metrics of every
    evaluator (``<evaluator>_<metric>``), epoch time (s), training images per second (of all processes) over the
    whole epoch, and in the steady state (`SteadyPace`, on ``device``)."""
    pace = SteadyPace(trainer, evaluators, device)

    def record(engine: Engine) -> None:
        epoch_time = engine.state.times[Events.EPOCH_COMPLETED.name] or math.nan
        per_iteration = engine.state.dataloader.batch_size * idist.get_world_size()  # all processes' images
        images = engine.state.epoch_length * per_iteration
        row = {
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": engine.state.metrics["loss"],
        }
        if img_size is not None:
            row["img_size"] = img_size()
        for name, evaluator in evaluators.items():
            row.update({f"{name}_{metric}": value for metric, value in evaluator.state.metrics.items()})
        steady = pace.images_per_s(per_iteration)
        row.update(
            {
                "epoch_time_s": round(epoch_time, 3),
                "train_images_per_s": round(images / epoch_time, 1),
                "train_images_per_s_steady": None if steady is None else round(steady, 1),
            }
        )
        history.record(row)
        logger.info(
            "epoch %d: "
            + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"),
            engine.state.epoch,
        )

    trainer.add_event_handler(Events.EPOCH_COMPLETED, record)
