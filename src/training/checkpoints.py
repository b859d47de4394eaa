"""Checkpoints: the best models by the selecting metric, the two newest full training states, resuming from them.

Files are written to a temporary name and renamed, and a replaced file is removed only after its successor is
complete (`SafeDiskSaver`), so a crash or Ctrl-C never leaves a broken checkpoint; a full disk is one line
(`write`). File names: `src.tracking.rundir`.
With several processes every one keeps the same handlers (and lists of files); rank 0 writes the files.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, global_step_from_engine
from ignite.handlers.ema_handler import EMAWarmUp

from src.model import check_shapes
from src.tracking.rundir import BEST_PREFIX, global_step_of
from src.training.evaluation import Selection
from src.utils import files

logger = logging.getLogger(__name__)
SAFE_TYPES = [EMAWarmUp]  # the classes our training states hold besides tensors and plain values (weights_only)


class SafeDiskSaver(DiskSaver):
    """An atomic `DiskSaver` that deletes a replaced checkpoint only after its successor is on disk.

    ignite's `Checkpoint` asks its saver to remove the file being replaced *before* writing the new one,
    so with ``n_saved=1`` a crash or Ctrl-C during the write would leave no checkpoint at all. Here the
    removal waits until the new file has been written to a temporary name and renamed into place (`write`, whose
    temporary names a continuing run recognises and removes, unlike ignite's ``tmpXXXXXXXX``).
    """

    def __init__(self, dirname: Path | str):
        super().__init__(dirname, atomic=True, require_empty=False)
        self._pending: list[str] = []

    def remove(self, filename: str) -> None:
        self._pending.append(filename)

    def __call__(self, checkpoint: Mapping[str, Any], filename: str, metadata: Mapping[str, Any] | None = None) -> None:
        if idist.get_rank() == self.save_on_rank:
            write(checkpoint, self.dirname / filename)
        while self._pending:
            name = self._pending.pop()
            if name != filename and idist.get_rank() == self.save_on_rank:  # same name: already replaced
                (self.dirname / name).unlink(missing_ok=True)


def write(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)`` under a temporary name renamed into place (`src.utils.files.atomic_path`: a kill leaves
    a recognisable temporary file, which the continuing run removes), readable by the group and others as ignite's
    `DiskSaver` leaves it.

    Raises:
        OSError: a full disk or a file-size limit (torch reports either as a ``RuntimeError`` of its zip writer):
            the file, its folder and the space free there; the files written before are intact.
    """
    try:
        with files.atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as error:
        if not is_write_failure(error):
            raise
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "the write failed"
        free = files.format_size(shutil.disk_usage(path.parent).free)
        raise OSError(
            getattr(error, "errno", None) or errno.EIO,
            f"cannot write {path.name} in {path.parent} ({reason}); {free} free there: a full disk, or a file-size "
            "limit (ulimit -f); the files written before are intact",
        ) from None
    os.chmod(path, os.stat(path).st_mode | stat.S_IRGRP | stat.S_IROTH)


def is_write_failure(error: BaseException) -> bool:
    """A full disk or a file-size limit: ``ENOSPC``, ``EFBIG``, ``EDQUOT``, or torch's zip writer failing to write
    (``[enforce fail at inline_container.cc...]``, ``file write failed``)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    text = str(error)
    return isinstance(error, RuntimeError) and ("inline_container" in text or "file write failed" in text)


def attach_best_checkpoint(
    trainer: Engine,
    selector: Engine,
    model: torch.nn.Module,
    run_dir: Path,
    n_saved: int,
    selection: Selection,
    by_iteration: bool = False,
) -> Checkpoint:
    """After each run of ``selector``, the selecting evaluator (``selection.name``: ``valid``, or ``valid_ema`` with
    ``--ema``), keeps the ``n_saved`` best weights of ``model`` by its metric:
    ``best_model_<epoch>_<selection.key>=<score>.pt`` (a lower-is-better metric's score is written negated, ignite's
    convention). With ``by_iteration`` (validation inside epochs) the files are numbered by the trainer's iteration.

    Returns:
        The handler; its list of kept files belongs in the saved training state, so a resumed run goes on rotating.
    """
    best = Checkpoint(
        {"model": model},
        SafeDiskSaver(run_dir),
        filename_prefix=BEST_PREFIX,
        n_saved=n_saved,
        score_function=selection.score_function(),
        score_name=selection.key,
        global_step_transform=(lambda *_: trainer.state.iteration)
        if by_iteration
        else global_step_from_engine(trainer),
    )
    selector.add_event_handler(Events.COMPLETED, best)
    return best


def attach_last_checkpoint(trainer: Engine, to_save: Mapping[str, Any], run_dir: Path) -> Checkpoint:
    """Saves the full training state ``to_save`` after every epoch as ``checkpoint_<iteration>.pt``, keeping the
    newest two (the previous one is the fallback when the newest cannot be read, `read_checkpoint`). Saves inside
    epochs (``--checkpoint-every``, a stop) call `save_state`.

    The file also holds the handler's own list of files (``include_self``), so a resumed run goes on rotating
    them (see `resume_from`).
    """
    last = Checkpoint(
        to_save,
        SafeDiskSaver(run_dir),
        n_saved=2,
        global_step_transform=lambda engine, event: engine.state.iteration,
        include_self=True,
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, save_state, last)
    return last


def save_state(engine: Engine, last: Checkpoint) -> bool:
    """Saves the training state with ``last`` unless it already holds this iteration's; every process calls it
    (rank 0 writes). Returns whether it saved."""
    if last.last_checkpoint is not None and _saved_iteration(last) == engine.state.iteration:
        return False
    last(engine)
    return True


def _saved_iteration(last: Checkpoint) -> int:
    return global_step_of(Path(str(last.last_checkpoint)))


def attach_model_file(
    evaluator: Engine, module: torch.nn.Module, run_dir: Path, prefix: str, trainer: Engine
) -> Checkpoint:
    """After each run of ``evaluator``, saves ``module``'s state dict as ``<prefix>_model_<epoch>.pt`` (only the
    newest kept, replaced atomically). Returns the handler; it belongs in the saved training state so a resumed
    run goes on replacing its file."""
    saver = Checkpoint(
        {"model": module},
        SafeDiskSaver(run_dir),
        filename_prefix=prefix,
        n_saved=1,
        global_step_transform=global_step_from_engine(trainer),
    )
    evaluator.add_event_handler(Events.COMPLETED, saver)
    return saver


def read_checkpoint(candidates: list[Path]) -> tuple[Path, dict[str, Any]]:
    """The first of ``candidates`` (newest first) that loads (``weights_only=True``); each one that does not
    (truncated, corrupt) is logged with the reason, and the next one is tried.

    Raises:
        ValueError: none of them loads.
    """
    for path in candidates:
        try:
            with torch.serialization.safe_globals(SAFE_TYPES):
                return path, torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for a broken file
            logger.warning(
                "%s cannot be read (%s: %s); trying the previous checkpoint", path, type(error).__name__, error
            )
    names = ", ".join(p.name for p in candidates)
    raise ValueError(f"no readable checkpoint among {names}: each is truncated or corrupt")


def read_resumable(
    candidates: list[Path], model: torch.nn.Module, epoch_length: int
) -> tuple[Path, dict[str, Any]]:
    """The newest readable of ``candidates`` (`read_checkpoint`), checked before the run writes anything: its model
    fits ``model`` (`check_shapes`) and its epochs have ``epoch_length`` iterations.

    Returns:
        (the checkpoint's path, its contents) for `src.training.trainer.resume`.

    Raises:
        ValueError: no candidate loads, another model, or epochs of another length (another batch size, data
            fraction, iteration cap or number of processes).
    """
    path, state = read_checkpoint(candidates)
    check_shapes(state.get("model", {}), model.state_dict(), "the checkpoint")
    saved = state.get("trainer", {}).get("epoch_length")
    if saved is not None and saved != epoch_length:
        raise ValueError(
            f"{path}: its epochs have {saved} iterations, this command's {epoch_length}: the run cannot go on with "
            "another --batch-size, --data-fraction, --max-iters-per-epoch or number of processes"
        )
    return path, state


def resume_from(
    state: Mapping[str, Any], to_save: Mapping[str, Any], last_checkpoint: Checkpoint | None = None
) -> list[str]:
    """Loads a training state (`read_checkpoint`) into the objects of ``to_save`` (and the last-state handler).

    Args:
        state: the checkpoint's contents.
        to_save: the same name -> object mapping the checkpoint was saved from.
        last_checkpoint: the run's last-state handler, to go on rotating its files.

    Returns:
        The names in ``to_save`` that the checkpoint did not hold (left as they were).

    Raises:
        ValueError: the checkpoint's model does not fit the run's (another arch, class or channel count): the
            message names the first tensor and both shapes.
    """
    to_load = {name: obj for name, obj in to_save.items() if name in state}
    check_shapes(state.get("model", {}), to_save["model"].state_dict(), "the checkpoint")
    Checkpoint.load_objects(to_load=to_load, checkpoint=state)
    if last_checkpoint is not None and "checkpointer" in state:
        last_checkpoint.load_state_dict(state["checkpointer"])
    return sorted(set(to_save) - set(to_load))

