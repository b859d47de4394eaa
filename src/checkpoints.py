"""Checkpoints: the best models by the selecting metric, the newest full training state, resuming from it.

Files are written to a temporary name and renamed, and a replaced file is removed only after its successor is
complete (`SafeDiskSaver`), so a crash or Ctrl-C never leaves a broken checkpoint. File names: `src.rundir`.
With several processes every one keeps the same handlers (and lists of files); rank 0 writes the files.
"""

from __future__ import annotations

from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, global_step_from_engine

from src.evaluation import Selection
from src.rundir import BEST_PREFIX


class SafeDiskSaver(DiskSaver):
    """An atomic `DiskSaver` that deletes a replaced checkpoint only after its successor is on disk.

    ignite's `Checkpoint` asks its saver to remove the file being replaced *before* writing the new one,
    so with ``n_saved=1`` a crash or Ctrl-C during the write would leave no checkpoint at all. Here the
    removal waits until the new file has been written to a temporary name and renamed into place.
    """

    def __init__(self, dirname: Path | str):
        super().__init__(dirname, atomic=True, require_empty=False)
        self._pending: list[str] = []

    def remove(self, filename: str) -> None:
        self._pending.append(filename)

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        super().__call__(checkpoint, filename, metadata)  # writes in the process of rank save_on_rank only
        while self._pending:
            name = self._pending.pop()
            if name != filename and idist.get_rank() == self.save_on_rank:  # same name: already replaced
                (self.dirname / name).unlink(missing_ok=True)


def attach_best_checkpoint(
    trainer: Engine,
    evaluator: Engine,
    model: torch.nn.Module,
    run_dir: Path,
    n_saved: int,
    selection: Selection,
    by_iteration: bool = False,
) -> Checkpoint:
    """After each run of the selecting ``evaluator``, keeps the ``n_saved`` best weights of ``model`` by its metric:
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
    evaluator.add_event_handler(Events.COMPLETED, best)
    return best


def attach_last_checkpoint(trainer: Engine, to_save: dict, run_dir: Path) -> Checkpoint:
    """Saves the full training state ``to_save`` after every epoch as ``checkpoint_<epoch>.pt`` (the newest only).

    The file also holds the handler's own list of files (``include_self``), so a resumed run goes on rotating
    them (see `resume_from`).
    """
    last = Checkpoint(
        to_save,
        SafeDiskSaver(run_dir),
        n_saved=1,
        global_step_transform=lambda engine, event: engine.state.epoch,
        include_self=True,
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, last)
    return last


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


def resume_from(path: Path, to_save: dict, last_checkpoint: Checkpoint | None = None) -> list[str]:
    """Loads a ``checkpoint_<epoch>.pt`` into the objects of ``to_save`` (and the last-state handler).

    Args:
        path: the checkpoint file.
        to_save: the same name -> object mapping the checkpoint was saved from.
        last_checkpoint: the run's last-state handler, to go on rotating its files.

    Returns:
        The names in ``to_save`` that the checkpoint did not hold (left as they were).
    """
    state = torch.load(path, map_location="cpu", weights_only=False)
    to_load = {name: obj for name, obj in to_save.items() if name in state}
    Checkpoint.load_objects(to_load=to_load, checkpoint=state)
    if last_checkpoint is not None and "checkpointer" in state:
        last_checkpoint.load_state_dict(state["checkpointer"])
    return sorted(set(to_save) - set(to_load))
