"""The run's history: one row of metrics per epoch, kept in memory and in ``history.csv``."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from pathlib import Path

import ignite.distributed as idist
from ignite.engine import Engine, Events

from src import files

logger = logging.getLogger(__name__)


class History:
    """Per-epoch metrics, kept in memory and, with a path, appended to a CSV file (one row per epoch).

    On resume the rows already in the file are read back, so the summary covers the whole run.
    """

    def __init__(self, path: Path | None = None):
        self.path = path
        self.rows: list[dict] = []
        if path is not None and path.is_file():
            with path.open(newline="") as f:
                self.rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]

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
        """The mean of ``key`` over the rows (0 without rows)."""
        return sum(r[key] for r in self.rows) / max(len(self.rows), 1)


def _number(text: str) -> float | int | None:
    if text == "":  # a metric that was not computed that epoch (e.g. SWA before it starts)
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def attach_history(
    trainer: Engine,
    evaluators: dict[str, Engine],
    optimizer,
    history: History,
    img_size: Callable[[], int] | None = None,
) -> None:
    """After the epoch's evaluations, records and logs one row: epoch, lr, (image size), losses, metrics of every
    evaluator (``<evaluator>_<metric>``), epoch time (s) and training images per second (of all processes)."""

    def record(engine: Engine) -> None:
        epoch_time = engine.state.times[Events.EPOCH_COMPLETED.name] or math.nan
        images = engine.state.epoch_length * engine.state.dataloader.batch_size * idist.get_world_size()  # all
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
        row.update({"epoch_time_s": round(epoch_time, 3), "train_images_per_s": round(images / epoch_time, 1)})
        history.record(row)
        logger.info(
            "epoch %d: "
            + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"),
            engine.state.epoch,
        )

    trainer.add_event_handler(Events.EPOCH_COMPLETED, record)
