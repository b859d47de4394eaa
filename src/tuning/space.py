"""A sweep's search space: trainer flags mapped to distributions, checked against the config before any trial.

The space is a YAML file or a dict, one entry per flag (flat config names, ``-`` or ``_``)::

    lr: {log_uniform: [1.0e-4, 1.0e-2]}
    weight_decay: {log_uniform: [1.0e-5, 1.0e-1]}
    mixup_alpha: {uniform: [0.0, 1.0]}
    epochs: {int: [4, 12]}
    aug: {choice: [light, medium]}

Each distribution maps to Optuna's (``suggest_float``, ``suggest_float(log=True)``, ``suggest_int``,
``suggest_categorical``); `check_space` refuses an unknown flag (naming the nearest), a distribution the field's
type cannot take, an empty range and a bound the config itself refuses, before the first trial.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from src.config import EXPERIMENT, FIELD_GROUPS, FIELD_TYPES, Config, typecheck

DISTRIBUTIONS = ("uniform", "log_uniform", "int", "log_int", "choice")
NOT_SWEPT = frozenset({"folds", "fold", "split_seed", "folds_from", "fold_col", "group_col"})
"""The fold assignment: the trials compare on the same folds, so none of them moves it."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One flag of the space: its config field ``name``, the distribution ``kind`` and its ``values`` (the two
    bounds of a range, or the choices)."""

    name: str
    kind: str
    values: tuple[Any, ...]

    def suggest(self, trial) -> Any:
        """The trial's value (Optuna's ``trial.suggest_*``)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.values))
        low, high = self.values
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.name, low, high, log=self.kind == "log_int")
        return trial.suggest_float(self.name, low, high, log=self.kind == "log_uniform")


def load_space(path: str | Path) -> dict[str, Any]:
    """The space file (YAML or JSON) as a mapping.

    Raises:
        FileNotFoundError: no such file. ValueError: not YAML, or not a mapping of flags.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--space {path}: no such file")
    try:
        space = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"--space {path}: not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(space, dict) or not space:
        raise ValueError(f"--space {path}: expected a mapping of flags to distributions, e.g. lr: {{log_uniform: "
                         "[1.0e-4, 1.0e-2]}")
    return space


def check_space(space: Mapping[str, Any], base: Config, where: str = "space") -> list[Param]:
    """The space's flags as `Param`, each checked: a config field that trains (not the folds), a distribution its
    type takes, a range that is not empty, and bounds (or choices) the config accepts with the fixed flags.

    Raises:
        ValueError: the first bad entry, naming it and what was expected (the nearest flag for an unknown one).
    """
    params = []
    for key, entry in space.items():
        name = str(key).lstrip("-").replace("-", "_")
        _check_name(name, where)
        if name in {param.name for param in params}:
            raise ValueError(f"{where}: {key}: the flag {name} is given twice")
        if not isinstance(entry, Mapping) or len(entry) != 1 or next(iter(entry)) not in DISTRIBUTIONS:
            raise ValueError(f"{where}: {key}: expected one distribution of {', '.join(DISTRIBUTIONS)} "
                             f"(e.g. {{log_uniform: [1.0e-4, 1.0e-2]}}), got {entry!r}")
        kind, values = next(iter(entry.items()))
        param = Param(name, kind, _values(f"{where}: {key}: {kind}", kind, values, FIELD_TYPES[name]))
        for value in param.values:  # the config's own checks, with the fixed flags
            try:
                base.replace(**{name: value})
            except ValueError as error:
                raise ValueError(f"{where}: {key}: {value!r} is refused by the trainer: {error}") from None
        params.append(param)
    return params


def _check_name(name: str, where: str) -> None:
    if name not in FIELD_GROUPS:
        near = difflib.get_close_matches(name, FIELD_GROUPS, n=1)
        hint = f"; did you mean {near[0]}?" if near else " (python -m src.train --help lists them)"
        raise ValueError(f"{where}: {name}: not a trainer flag{hint}")
    if name in NOT_SWEPT:
        raise ValueError(f"{where}: {name}: the folds are fixed for every trial (set --{name.replace('_', '-')} "
                         "among the sweep's flags)")
    if name not in EXPERIMENT:
        raise ValueError(f"{where}: {name}: not a setting of what a run learns (where or how it runs): fix it "
                         "among the sweep's flags")


def _values(where: str, kind: str, values: Any, hint: Any) -> tuple[Any, ...]:
    """The distribution's bounds or choices, typed as the field."""
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"{where}: expected a list ({'[low, high]' if kind != 'choice' else 'the choices'})")
    if kind == "choice":
        try:
            return tuple(typecheck.conform(value, hint) for value in values)
        except typecheck.WrongType as expected:
            raise ValueError(f"{where}: {values!r}: expected {expected}") from None
    wanted = int if kind in ("int", "log_int") else float
    if wanted not in _scalar_types(hint):
        raise ValueError(f"{where}: the flag takes {typecheck.describe(hint)}, not a {wanted.__name__} range "
                         "(use choice)")
    try:  # YAML 1.1 reads 1e-4 (no dot) as text: taken as meant, as in config files
        numbers = [typecheck.conform(value, float) for value in values]
    except typecheck.WrongType:
        numbers = []
    if len(values) != 2 or len(numbers) != 2:
        raise ValueError(f"{where}: expected [low, high], two numbers, got {values!r}")
    if wanted is int and any(v != int(v) for v in numbers):
        raise ValueError(f"{where}: expected two integers, got {values!r}")
    low, high = (wanted(v) for v in numbers)
    if not low < high:
        raise ValueError(f"{where}: an empty range {values!r}: expected low < high")
    if kind.startswith("log") and low <= 0:
        raise ValueError(f"{where}: a log range needs low > 0, got {values!r}")
    return low, high


def _scalar_types(hint: Any) -> set[type]:
    """The plain types an annotation allows (``float | None`` -> {float, NoneType})."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*(_scalar_types(option) for option in typing.get_args(hint)))
    return {hint} if isinstance(hint, type) else set()


def as_flags(values: Mapping[str, Any]) -> list[str]:
    """The trial's values as trainer flags, as typed (``--lr 0.003``, ``--amp`` / ``--no-amp``)."""
    flags = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            flags += [flag, ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)]
    return flags
