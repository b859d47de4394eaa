"""Sweeps: ``python -m src.sweep --space sweep.yaml --trials N [--storage URL] [--study NAME] [--time-budget 6h]
[--pruner median|hyperband|none] [--sweep-folds K] [trainer flags ...]`` and ``python -m src.sweep report --study
NAME [--storage URL] [--out DIR]`` (README "Sweeps").

An Optuna study (TPE) over trainer flags (`src.tuning.space`): the flags that are not the sweep's are the trainer's,
fixed for every trial; each trial is a normal training run (run folder ``<study>-t<number>``, the run table, the
notes log, MLflow), trained in this process by `src.train.command`, and its objective is the selecting metric of
the fold (default: fold 0, on the folds of ``--split-seed``, fixed) or, with ``--sweep-folds K``, the OOF score of
the first K folds, in the metric's direction. Optuna-integration's ignite handler reports each validation to the
pruner (`src.tuning.study.Pruning`). Every worker runs the same command on one storage (a journal file by default,
``--storage postgresql://...`` or a journal file on a shared filesystem for several machines): together they run
``--trials`` trials; an interrupted sweep continues where it stopped, its killed trial retried once
(`src.tuning.study`). From a notebook: ``src.sweep.run(space, base_config, trials=20)``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from src.cli import INTERRUPTED, parse_args, parse_config, run_cli
from src.config import EXPERIMENT, FOLDER_FIELDS, Config, parse_duration
from src.metrics import get_metric
from src.train import Extras
from src.train import command as train_command
from src.training.assembly import prepare, setup_data
from src.training.stopping import TIME_LIMIT_EXIT, Stopped
from src.tuning import report as sweep_report
from src.tuning.space import Param, as_flags, check_space, load_space
from src.tuning.study import (
    INTERRUPTED_ATTR,
    PRUNERS,
    RUN_ATTR,
    SURPLUS_ATTR,
    Pruning,
    claim,
    import_optuna,
    is_second_retry,
    is_surplus,
    make_pruner,
    open_study,
    retry_interrupted,
    storage,
    wants_trial,
)
from src.utils.errors import Pruned

logger = logging.getLogger("src.sweep")


@dataclasses.dataclass
class SweepConfig:
    """Sweep the trainer's flags with Optuna: every flag that is not the sweep's is the trainer's, fixed for all
    trials (python -m src.train --help lists them)."""

    space: str
    """The search space: a YAML file mapping flags to distributions (lr: {log_uniform: [1.0e-4, 1.0e-2]},
    mixup_alpha: {uniform: [0, 1]}, epochs: {int: [4, 12]}, aug: {choice: [light, medium]})."""
    trials: int = 20
    """Trials of the study in all, over every worker running this command."""
    study: str | None = None
    """The study's name (its trials' run folders are <study>-t<number>); None: the space file's name."""
    storage: str | None = None
    """Where the study lives, shared by its workers: a journal file (a path; on a shared filesystem for several
    machines) or a database URL (sqlite:///sweeps.db, postgresql://user@host/db); None: <output-dir>/sweeps/
    <study>.journal."""
    time_budget: str | None = None
    """Wall time for this worker (6h, 90m): no trial starts that would not end in it, and the running one stops at
    its end (retried from its checkpoint when the sweep continues)."""
    pruner: Literal["median", "hyperband", "none"] = "median"
    """Stops hopeless trials at a validation: median (the trial trails the median of earlier trials at that
    epoch), hyperband, or none."""
    pruner_startup_trials: int = 5
    """median: trials that finish before any is pruned."""
    pruner_warmup_epochs: int = 1
    """median: epochs of each trial before it can be pruned."""
    sweep_folds: int | None = None
    """The objective: None, the selecting metric of the trainer's --fold (default 0); K, the OOF score of the first
    K folds (each trial trains K folds)."""
    sampler_seed: int | None = None
    """Seed of the TPE sampler (one worker's sweep then repeats); None: random."""

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError(f"--trials {self.trials}: expected an integer >= 1")
        if self.sweep_folds is not None and self.sweep_folds < 1:
            raise ValueError(f"--sweep-folds {self.sweep_folds}: expected an integer >= 1")
        if self.time_budget is not None and not parse_duration(self.time_budget):
            raise ValueError(f"--time-budget {self.time_budget!r}: expected a wall time such as 6h, 90m, 1h30m")
        if self.pruner not in PRUNERS:
            raise ValueError(f"--pruner {self.pruner!r}: expected one of {', '.join(PRUNERS)}")


@dataclasses.dataclass
class ReportConfig:
    """Report a sweep: its best trials, parameter importances, plots, and the best trial's settings (best.yaml)."""

    study: str
    """The study's name."""
    storage: str | None = None
    """Where the study lives (as for the sweep); None: <output-dir>/sweeps/<study>.journal."""
    out: str | None = None
    """The report's folder; None: <output-dir>/sweeps/<study>."""
    output_dir: str = "experiments"
    """The trainer's --output-dir of the sweep (where its default storage is)."""


class Surplus(Exception):
    """A trial started beyond ``--trials`` by two workers at once: dropped before it trains."""


class OutOfTime(Exception):
    """The sweep's ``--time-budget`` stopped the running trial."""


def default_storage(output_dir: str | Path, study: str) -> Path:
    return Path(output_dir) / "sweeps" / f"{study}.journal"


def run(space: Mapping[str, Any] | str | Path, base: Config, trials: int = 20, argv: Sequence[str] = (),
        enqueue: Sequence[Mapping[str, Any]] = (), **options: Any):
    """Runs a sweep (this process is one worker) and returns the Optuna study.

    Args:
        space: the search space, a mapping (``{"lr": {"log_uniform": [1e-4, 1e-2]}}``) or a YAML file.
        base: the fixed settings of every trial (``Config.of(arch="resnet18", epochs=6)``).
        trials: the study's trials in all.
        argv: the trainer flags ``base`` came from (the trials' notes show them).
        enqueue: parameter sets to try first (Optuna's ``enqueue_trial``; the defaults, a known good recipe).
        options: the other fields of `SweepConfig` (``study``, ``storage``, ``pruner``, ``sweep_folds``, ...).

    Raises:
        ValueError: a bad space (before any trial), base config or option; optuna missing.
        Stopped: a signal stopped the running trial (its state saved; the same sweep again continues it).
    """
    where = f"--space {space}" if isinstance(space, str | Path) else "space"
    if options.get("study") is None:
        options["study"] = Path(space).stem if isinstance(space, str | Path) else "sweep"
    if isinstance(space, str | Path):
        space = load_space(space)
    config = SweepConfig(space=where, trials=trials, **options)
    params = check_space(space, base, where)
    base = checked_base(base, config)
    setup_data(prepare(base))  # the data and folds read once before anything is written: a typo is refused here
    optuna = import_optuna()
    sampler = optuna.samplers.TPESampler(seed=config.sampler_seed)
    epochs = None if any(param.name == "epochs" for param in params) else base.optim.epochs
    pruner = make_pruner(config.pruner, epochs, config.pruner_startup_trials, config.pruner_warmup_epochs)
    maximize = get_metric(base.eval.metric).higher_is_better
    settings = {"experiment": {k: v for k, v in base.flat().items() if k in EXPERIMENT}, "space": dict(space),
                "objective": objective_name(base, config)}
    settings = json.loads(json.dumps(settings))  # as the storage keeps it (tuples as lists)
    store = storage(config.storage, default_storage(base.run.output_dir, config.study))
    study = open_study(config.study, store, maximize, settings, saved_base(base), pruner, sampler)
    for values in enqueue:
        study.enqueue_trial(dict(values), skip_if_exists=True)
    objective = Objective(params, base, list(argv), config)
    while True:
        retry_interrupted(study)  # before each trial: another worker may have been killed meanwhile
        if not (wants_trial(study.get_trials(deepcopy=False), config.trials) and objective.has_time()):
            break
        try:
            study.optimize(objective, n_trials=1, catch=(ValueError, Surplus))
        except OutOfTime:
            break
    summarise(study)
    return study


def checked_base(base: Config, config: SweepConfig) -> Config:
    """The trials' fixed settings: ``--split-seed`` fixed (every trial on the same folds).

    Raises:
        ValueError: a dry run, a run name or resume of the trainer's (the sweep names its runs), or a fold.
    """
    flat = base.flat()
    for name in FOLDER_FIELDS | {"dry_run", "time_budget", "time_limit"}:
        if flat[name] not in (None, False):
            flag = name.replace("_", "-")
            raise ValueError(f"--{flag}: the sweep names, starts and times its trials' runs itself; leave --{flag} "
                             "out (see --time-budget of python -m src.sweep --help)")
    if config.sweep_folds is not None and config.sweep_folds > base.split.folds:
        raise ValueError(f"--sweep-folds {config.sweep_folds}: more than --folds {base.split.folds}")
    return base.replace(split_seed=base.split_seed)


def saved_base(base: Config) -> dict[str, Any]:
    """The base config's fields, but for those that name or time a run (`src.tuning.report`'s best.yaml)."""
    return {k: v for k, v in base.flat().items() if k not in FOLDER_FIELDS | {"time_limit", "dry_run"}}


def objective_name(base: Config, config: SweepConfig) -> str:
    """What the trials are scored by, in words (the study records it: every worker must agree)."""
    if config.sweep_folds is not None:
        return f"{base.eval.metric}: OOF of folds 0-{config.sweep_folds - 1}"
    if base.split.fold == "all":
        return f"{base.eval.metric}: OOF of {base.split.folds} folds"
    return f"{base.eval.metric}: best validation of fold {base.split.fold}"


class Objective:
    """One trial: the space's values on the fixed settings, trained as a normal run; returns its score."""

    def __init__(self, params: list[Param], base: Config, argv: list[str], config: SweepConfig) -> None:
        self.params, self.base, self.argv, self.config = params, base, argv, config
        budget_s = parse_duration(config.time_budget) if config.time_budget else None
        self.deadline = time.monotonic() + budget_s if budget_s else None
        self.durations: list[float] = []

    def has_time(self) -> bool:
        """Whether another trial fits in ``--time-budget`` (the median trial so far must; the first one starts)."""
        if self.deadline is None:
            return True
        left = self.deadline - time.monotonic()
        needed = statistics.median(self.durations) if self.durations else 0.0
        if left <= needed:
            logger.info("time budget: %.0f s left, a trial takes %.0f s: no trial starts", left, needed)
        return left > needed

    def __call__(self, trial) -> float:
        values = {param.name: param.suggest(trial) for param in self.params}
        run_name = trial.user_attrs.get(RUN_ATTR) or f"{self.config.study}-t{trial.number:03d}"
        claim(trial, run_name)
        trials = trial.study.get_trials(deepcopy=False)
        if is_surplus(trials, trial.number, self.config.trials) or is_second_retry(trials, trial):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise Surplus(f"trial {trial.number}: beyond --trials {self.config.trials} or retried already, dropped")
        changes = values | {"run_name": run_name}
        if self.config.sweep_folds is not None:
            changes["fold"] = "all"
        if self.deadline is not None:
            changes["time_limit"] = f"{max(1, int(self.deadline - time.monotonic()))}s"
        config = self.base.replace(**changes)
        every_fold = ["--fold", "all"] if "fold" in changes else []
        argv = [*self.argv, *as_flags(values), *every_fold, "--run-name", run_name]
        extras = Extras(handlers=Pruning(trial), folds=self.config.sweep_folds)
        started = time.monotonic()
        try:
            summary = train_command(config, argv, extras)
        except Pruned:
            raise import_optuna().TrialPruned() from None
        except Stopped as stopped:
            trial.set_user_attr(INTERRUPTED_ATTR, stopped.reason)
            if stopped.exit_code == TIME_LIMIT_EXIT and self.deadline is not None:
                raise OutOfTime(stopped.reason) from None
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: the run kept its last checkpoint
            trial.set_user_attr(INTERRUPTED_ATTR, "KeyboardInterrupt")
            raise
        self.durations.append(time.monotonic() - started)
        score = summary.get("oof_score" if config.split.fold == "all" else "best_valid_score") if summary else None
        if score is None:
            raise ValueError(f"trial {trial.number}: run {run_name} has no score")
        return float(score)


def summarise(study) -> None:
    """Prints the study's counts and its best trial so far."""
    table = sweep_report.trials_table(study)
    if table.empty:
        print(f"sweep {study.study_name}: no trials")
        return
    states = ", ".join(f"{n} {s}" for s, n in table["state"].value_counts().items())
    best = table.iloc[0]
    found = f"best so far: trial {best['trial']}, {best['value']} ({best['run']})" if best["state"] == "complete" \
        else "no trial finished"
    print(f"sweep {study.study_name}: {len(table)} trials ({states}); {found}; report: python -m src.sweep report "
          f"--study {study.study_name}")


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The sweep's own flags (`SweepConfig`) and the trainer's, from one command line."""
    own = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(SweepConfig)} | {"-h", "--help"}
    mine, trainer = [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg.split("=", 1)[0] in own:
            mine.append(arg)
            if "=" not in arg and arg not in ("-h", "--help") and args:
                mine.append(args.pop(0))
        else:
            trainer.append(arg)
    return mine, trainer


def command(argv: Sequence[str]) -> None:
    """``report`` or a sweep, parsed from the command line."""
    if argv and argv[0] == "report":
        options = parse_args(ReportConfig, argv[1:], prog="python -m src.sweep report")
        where = options.storage or str(default_storage(options.output_dir, options.study))
        path = where.removeprefix("sqlite:///") if where.startswith("sqlite:///") else where
        if "://" not in path and not Path(path).is_file():
            raise FileNotFoundError(f"--storage {where}: no such file (the sweep's --storage, or --output-dir for "
                                    "its default journal)")
        store = storage(where, Path(where))
        optuna = import_optuna()
        try:
            study = optuna.load_study(study_name=options.study, storage=store)
        except KeyError:
            raise ValueError(f"--study {options.study}: no such study in {where}") from None
        sweep_report.write_report(study, Path(options.out or Path(options.output_dir) / "sweeps" / options.study))
        return
    mine, trainer = split_argv(argv)
    options = parse_args(SweepConfig, mine, prog="python -m src.sweep")
    base = parse_config(trainer, prog="python -m src.sweep")
    others = {k: v for k, v in dataclasses.asdict(options).items() if k not in ("space", "trials")}
    try:
        run(options.space, base, options.trials, argv=trainer, **others)
    except Stopped as stopped:
        stopped.command = "python -m src.sweep " + shlex.join(argv)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda: command(argv), interrupted=INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
