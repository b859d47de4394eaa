"""``python -m src.sweep report``: a study's best trials, Optuna's parameter importances, its plots, and the best
trial's settings as a config file (``best.yaml``) to train every fold with."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from src.config import FOLDER_FIELDS, config_from_dict
from src.tuning.study import BASE_ATTR, RUN_ATTR, counted, import_optuna
from src.utils import files

logger = logging.getLogger(__name__)

BEST = "best.yaml"
TRIALS = "trials.csv"
PLOTS = {"history.png": "plot_optimization_history", "slices.png": "plot_slice", "importances.png":
         "plot_param_importances"}
SHOWN = 5  # the best trials printed


def trials_table(study) -> pd.DataFrame:
    """One row per trial that counts (`src.tuning.study.counted`): number, state, value (a pruned trial's: its
    last validation), epochs reported, duration (s), parameters, run folder; the finished trials first, the best
    first."""
    optuna = import_optuna()
    rows = []
    for trial in counted(study.get_trials(deepcopy=False)):
        duration = trial.duration.total_seconds() if trial.duration else None
        rows.append({"trial": trial.number, "state": trial.state.name.lower(), "value": trial.value,
                     "epochs": len(trial.intermediate_values) or None, "duration_s": duration,
                     **{f"param_{k}": v for k, v in trial.params.items()}, "run": trial.user_attrs.get(RUN_ATTR)})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    ascending = study.direction == optuna.study.StudyDirection.MINIMIZE
    frame = frame.sort_values("value", ascending=ascending, na_position="last", kind="stable")
    return frame.sort_values("state", key=lambda state: state != "complete", kind="stable")  # finished ones first


def importances(study) -> dict[str, float]:
    """Optuna's parameter importances (its default evaluator) over the finished trials; empty with fewer than two
    or when no parameter varies."""
    optuna = import_optuna()
    try:
        return optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as error:
        logger.info("no parameter importances: %s", error)
        return {}


def best_config_text(study) -> str:
    """The best trial's settings: the study's fixed settings with the trial's parameters, as a config file (one
    mapping per group) headed by where it came from.

    Raises:
        ValueError: no trial finished yet.
    """
    best = study.best_trial
    base = dict(study.user_attrs[BASE_ATTR])
    config = config_from_dict(base | best.params)
    groups = {group: {k: v for k, v in fields.items() if k not in FOLDER_FIELDS}
              for group, fields in config.to_dict().items()}
    header = (f"# The best trial of sweep {study.study_name}: trial {best.number}, {best.value} "
              f"({best.user_attrs.get(RUN_ATTR)}).\n# Train every fold: python -m src.train --config {BEST} "
              "--fold all\n")
    return header + yaml.safe_dump(groups, sort_keys=False)


def write_report(study, out: Path) -> dict[str, Any]:
    """Prints the best trials and the importances; writes ``trials.csv``, ``best.yaml`` and the plots (PNG)
    into ``out``. Returns ``{"best": number, "value": ..., "importances": {...}, "files": [...]}``.

    Raises:
        ValueError: the study has no finished trial.
    """
    optuna = import_optuna()
    table = trials_table(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ValueError(f"--study {study.study_name}: no trial has finished yet ({len(table)} counted)")
    out.mkdir(parents=True, exist_ok=True)
    written = [out / TRIALS, out / BEST]
    files.write_text(out / TRIALS, table.to_csv(index=False))
    files.write_text(out / BEST, best_config_text(study))
    weights = importances(study)
    written += _plots(study, out)
    states = table["state"].value_counts().to_dict()
    print(f"study {study.study_name}: {len(table)} trials ({', '.join(f'{n} {s}' for s, n in states.items())}); "
          f"best: trial {study.best_trial.number}, {study.best_value} ({study.best_trial.user_attrs.get(RUN_ATTR)})")
    print(table.head(SHOWN).to_string(index=False))
    if weights:
        print("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items()))
    print(f"wrote {', '.join(str(p) for p in written)}")
    return {"best": study.best_trial.number, "value": study.best_value, "importances": weights,
            "files": [str(p) for p in written]}


def _plots(study, out: Path) -> list[Path]:
    """Optuna's matplotlib plots of the history, the slices and the importances (those that can be drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optuna = import_optuna()
    written = []
    for name, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = getattr(optuna.visualization.matplotlib, function)(study)
        except (ValueError, RuntimeError) as error:  # too few trials for it
            logger.info("no %s: %s", name, error)
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        with files.atomic_path(out / name) as temporary:
            figure.savefig(temporary, dpi=100, bbox_inches="tight", format="png")
        plt.close(figure)
        written.append(out / name)
    return written
