"""The Optuna study a sweep's workers share: its storage, its sampler and pruner, which trials count toward
``--trials``, and the trials an interrupted worker left behind.

Optuna keeps the study (TPE sampling, the pruners, RDB and journal storages that several processes and machines
share); what is ours is the bookkeeping a sweep of long training runs needs on top of it:

- **exactly ``--trials`` trials** across workers: a worker starts a trial only while fewer count, and a trial that
  two workers started at once beyond the count is dropped before it trains (marked failed, ``surplus``);
- **a killed trial is retried once**: a trial left running by a worker process that no longer exists on this
  host, or stopped by a signal or the time limit (``interrupted``), is marked failed and enqueued again with its
  parameters and run folder, so the retry continues the run from its last checkpoint. Workers look before each
  trial. A worker killed on another machine is seen only by a worker on that machine (by host name: the journal
  storage keeps no heartbeats);
- **one study, one command**: the first worker records the fixed settings, the space and the objective in the
  study; a worker with others is refused (`open_study`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from src.utils import processes
from src.utils.errors import Pruned

logger = logging.getLogger(__name__)

PRUNERS = ("median", "hyperband", "none")
SETTINGS_ATTR = "settings"  # the study's user attribute: the settings every worker must share
BASE_ATTR = "base"  # the first worker's whole config (flat, no folder fields): the best trial's config file
WORKER_ATTR, RUN_ATTR, RETRY_ATTR, INTERRUPTED_ATTR, SURPLUS_ATTR = (
    "worker", "run_name", "retry_of", "interrupted", "surplus")


def import_optuna():
    """Optuna, or one line saying how to install it (it is optional for users of the trainer alone).

    Raises:
        ValueError: optuna or optuna-integration is not installed.
    """
    try:
        import optuna
        import optuna_integration  # noqa: F401 - the ignite pruning handler's package
    except ImportError as error:
        raise ValueError(f"sweeps need optuna and optuna-integration ({error.name} is missing): "
                         "pip install optuna optuna-integration") from None
    return optuna


def storage(url: str | None, default: Path):
    """The study's storage: an RDB URL (``sqlite:///sweeps.db``, ``postgresql://...``), else a journal file (a
    path; ``default`` when None), which several processes share through its file lock (on a shared filesystem,
    several machines)."""
    optuna = import_optuna()
    target = url or str(default)
    if "://" in target:
        return optuna.storages.RDBStorage(target, engine_kwargs={"connect_args": {"timeout": 60}}
                                          if target.startswith("sqlite") else None)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(target))


def make_pruner(kind: str, epochs: int | None, startup_trials: int = 5, warmup_epochs: int = 1):
    """Optuna's pruner: ``median`` (`MedianPruner`: a trial whose best score so far trails the median of the
    earlier trials' at the same epoch, once ``startup_trials`` trials have finished and from epoch
    ``warmup_epochs`` + 1), ``hyperband``
    (`HyperbandPruner`, from 1 to ``epochs`` epochs, None when the space sets them: the first finished trial's;
    Li et al. 2018) or ``none``."""
    optuna = import_optuna()
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs + 1)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto" if epochs is None else epochs)
    return optuna.pruners.NopPruner()


def open_study(name: str, store, maximize: bool, settings: Mapping[str, Any], base: Mapping[str, Any], pruner,
               sampler):
    """Creates the study, or loads it when another worker (or an earlier, interrupted sweep) made it; the first
    records ``settings`` (what every worker must share) and ``base`` (its whole config, for `src.tuning.report`).

    Raises:
        ValueError: the study was made with other settings (naming the first that differs) or direction.
    """
    optuna = import_optuna()
    direction = "maximize" if maximize else "minimize"
    if name in optuna.get_all_study_names(store):  # read only: a refused worker leaves the storage as it was
        study = optuna.load_study(study_name=name, storage=store, sampler=sampler, pruner=pruner)
    else:  # two workers starting at once: the second loads the first's
        study = optuna.create_study(study_name=name, storage=store, direction=direction, load_if_exists=True,
                                    sampler=sampler, pruner=pruner)
    if study.direction.name.lower() != direction:
        raise ValueError(f"--study {name}: it {study.direction.name.lower()}s its objective, this command "
                         f"{direction}s (another --metric?): name another study")
    saved = study.user_attrs.get(SETTINGS_ATTR)
    if saved is None:
        study.set_user_attr(SETTINGS_ATTR, dict(settings))
        study.set_user_attr(BASE_ATTR, dict(base))
    elif saved != settings:
        key = next(k for k in sorted(set(saved) | set(settings)) if saved.get(k) != settings.get(k))
        raise ValueError(f"--study {name}: started with {key} = {saved.get(key)!r}, this command has "
                         f"{settings.get(key)!r}: every worker runs the same command (or name another study)")
    return study


def counted(trials: Sequence[Any]) -> list[Any]:
    """The trials that count toward ``--trials``: all but the surplus ones, those whose retry counts instead, and a
    second retry of one trial (two workers that found it interrupted at once each enqueued one)."""
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials}
    return [t for t in trials if not t.user_attrs.get(SURPLUS_ATTR) and t.number not in retried
            and not is_second_retry(trials, t)]


def is_second_retry(trials: Sequence[Any], trial) -> bool:
    """Whether ``trial`` retries a trial that an earlier-numbered trial already retries."""
    of = trial.user_attrs.get(RETRY_ATTR)
    return of is not None and any(t.user_attrs.get(RETRY_ATTR) == of and t.number < trial.number for t in trials)


def wants_trial(trials: Sequence[Any], total: int) -> bool:
    """Whether a worker starts another trial: fewer than ``total`` count, or a retry waits."""
    optuna = import_optuna()
    counting = counted(trials)
    return len(counting) < total or any(t.state == optuna.trial.TrialState.WAITING for t in counting)


def is_surplus(trials: Sequence[Any], number: int, total: int) -> bool:
    """Whether trial ``number`` came beyond ``total`` (two workers started one each as the count reached it)."""
    return len([t for t in counted(trials) if t.number < number]) >= total


def retry_interrupted(study) -> list[int]:
    """Marks the trials an interrupted worker left (`interrupted`) failed and enqueues each again, once (a retry is
    not retried), with its parameters and run folder. Returns the numbers of those enqueued."""
    optuna = import_optuna()
    trials = study.get_trials(deepcopy=False)
    left = [t for t in trials if interrupted(t)]
    for trial in left:
        if trial.state == optuna.trial.TrialState.RUNNING:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials}
    again = [t for t in left if t.number not in retried and RETRY_ATTR not in t.user_attrs]
    for trial in again:
        study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number, RUN_ATTR: trial.user_attrs[RUN_ATTR]})
        logger.warning("trial %d was interrupted (%s): retried once, continuing run %s", trial.number,
                       trial.user_attrs.get(INTERRUPTED_ATTR, "its worker is gone"), trial.user_attrs[RUN_ATTR])
    return [t.number for t in again]


def interrupted(trial) -> bool:
    """A trial stopped by a signal or the time limit, or still running in a worker process of this host that no
    longer exists (killed)."""
    optuna = import_optuna()
    if RUN_ATTR not in trial.user_attrs:
        return False
    if trial.state == optuna.trial.TrialState.FAIL:
        return INTERRUPTED_ATTR in trial.user_attrs
    worker = trial.user_attrs.get(WORKER_ATTR) or {}
    if trial.state != optuna.trial.TrialState.RUNNING or worker.get("host") != socket.gethostname():
        return False
    pid = worker.get("pid")  # this process runs no trial while it looks (a restarted container's worker reuses pids)
    return pid == os.getpid() or not processes.alive(pid, worker.get("started"))


def claim(trial, run_name: str) -> None:
    """Records the trial's worker (this host and process) and its run folder's name."""
    pid = os.getpid()
    trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": pid, "started": processes.start_time(pid)})
    trial.set_user_attr(RUN_ATTR, run_name)


class Pruning:
    """optuna-integration's ignite pruning handler (`PyTorchIgnitePruningHandler`) reporting the selecting
    evaluator's metric at the end of each epoch of the trial's first fold (the step: the epoch), after the run's own
    handlers (the epoch's history row is written first). A pruned run ends as `src.utils.errors.Pruned` (its
    status: ``pruned``)."""

    def __init__(self, trial) -> None:
        self.trial, self.attached = trial, False

    def __call__(self, training, selector: Engine) -> None:
        if self.attached:  # later folds: the pruner compares the first fold's validations
            return
        self.attached = True
        from optuna_integration import PyTorchIgnitePruningHandler

        handler = PyTorchIgnitePruningHandler(self.trial, training.selection.metric, training.trainer)
        optuna = import_optuna()

        def prune(evaluator: Engine) -> None:
            try:
                handler(evaluator)
            except optuna.TrialPruned as pruned:
                raise Pruned(f"pruned by the sweep (trial {self.trial.number}): {pruned}") from None

        training.trainer.add_event_handler(Events.EPOCH_COMPLETED, prune, selector)
