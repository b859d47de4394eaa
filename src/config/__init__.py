"""The typed run configuration: one dataclass per concern, gathered in `Config`.

Each group checks its own fields in ``__post_init__`` and turns the comma-separated text of the command line
and of old config files into typed tuples there (``--label-col a,b`` -> ``("a", "b")``). The flags keep their
flat names (``--arch``, ``--accumulation-steps``): tyro omits the group prefixes and ``--help`` shows one
heading per group. A config file may use flat keys (every config file written before the groups existed)
or one mapping per group (what `save_config` writes). `src.cli.parse_config` fills a `Config` from the
defaults, ``--config FILE`` and the flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from src.config import choices, typecheck  # submodules, loaded before the groups that use them
from src.config.data import DataConfig, DistillConfig, LoaderConfig, PseudoConfig, SplitConfig
from src.config.fields import (
    EVAL_MULTIPLE,
    LOG_EVERY,
    Group,
    Role,
    deferred_checks,
    format_duration,
    parse_duration,
    parse_size_schedule,
    setting,
)
from src.config.run import CompetitionConfig, RunConfig, TrackConfig
from src.config.training import EvalConfig, LossConfig, ModelConfig, OptimConfig, RegularisationConfig, StepConfig
from src.utils import files

__all__ = [  # the package's public names, wherever in it they are defined
    "EVAL_MULTIPLE", "EXPERIMENT", "FIELD_GROUPS", "FIELD_TYPES", "FOLDER_FIELDS", "GROUPS", "INFERRED", "LOG_EVERY",
    "OLD_RUN_DEFAULTS", "RESUMABLE", "ROLES", "CompetitionConfig", "Config", "DataConfig", "DistillConfig",
    "EvalConfig", "LoaderConfig", "LossConfig", "ModelConfig", "OptimConfig", "PseudoConfig", "RegularisationConfig",
    "Role", "RunConfig", "SplitConfig", "StepConfig", "TrackConfig", "check_whole", "config_from_dict",
    "deferred_checks", "format_duration", "load_config_file", "parse_duration", "parse_size_schedule",
    "save_config", "setting",
]


@dataclasses.dataclass
class Config:
    """Train an image classifier. Flags override `--config FILE` (YAML or JSON), which overrides defaults."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    pseudo: PseudoConfig = dataclasses.field(default_factory=PseudoConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    loader: LoaderConfig = dataclasses.field(default_factory=LoaderConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    step: StepConfig = dataclasses.field(default_factory=StepConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    regularisation: RegularisationConfig = dataclasses.field(default_factory=RegularisationConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)
    competition: CompetitionConfig = dataclasses.field(default_factory=CompetitionConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    @classmethod
    def of(cls, **fields: Any) -> Config:
        """A config from flat field names, as the flags spell them: ``Config.of(arch="effnet-b2", lr=1e-3)``.

        Raises:
            ValueError: an unknown field or a bad value.
        """
        return config_from_dict(fields)

    def replace(self, **fields: Any) -> Config:
        """A copy with the given fields (flat names, as the flags) changed; the groups are checked again.

        Raises:
            ValueError: an unknown field or a bad value.
        """
        changes: dict[str, dict[str, Any]] = {}
        for name, value in fields.items():
            changes.setdefault(_group_of(name, "Config.replace"), {})[name] = value
        return dataclasses.replace(
            self, **{group: dataclasses.replace(getattr(self, group), **values) for group, values in changes.items()}
        )

    def checked(self) -> Config:
        """Types and checks every group (after `deferred_checks`); returns the config itself.

        Raises:
            ValueError: the first bad value, naming its flag.
        """
        for group in GROUPS:
            getattr(self, group).check()
        return self

    def flat(self) -> dict[str, Any]:
        """Every field by its flat name (as the flags spell it), in group order."""
        return {name: value for group in self.to_dict().values() for name, value in group.items()}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """One mapping per group, tuples as lists (YAML- and JSON-safe)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def early_stopping_start(self) -> int:
        """--early-stopping-start-epoch, resolved: the first epoch (1-based) whose validations early stopping sees."""
        if self.eval.early_stopping_start_epoch is not None:
            return self.eval.early_stopping_start_epoch
        optim = self.optim
        if optim.scheduler in choices.ANNEALING_SCHEDULERS:  # the last quarter of the decay from the peak
            return max(1, math.ceil(optim.warmup_epochs + 0.75 * (optim.epochs - optim.warmup_epochs)))
        return 1

    @property
    def split_seed(self) -> int:
        """The seed of the fold assignment: --split-seed, or else --seed."""
        return self.run.seed if self.split.split_seed is None else self.split.split_seed


GROUPS: dict[str, type[Group]] = {field.name: field.default_factory for field in dataclasses.fields(Config)}
FIELD_GROUPS: dict[str, str] = {field.name: group for group, cls in GROUPS.items() for field in dataclasses.fields(cls)}
FIELD_TYPES: dict[str, Any] = {
    name: hint for cls in GROUPS.values() for name, hint in typing.get_type_hints(cls, include_extras=True).items()
}
ROLES: dict[str, Role] = {
    field.name: field.metadata.get("role", Role()) for cls in GROUPS.values() for field in dataclasses.fields(cls)
}
RESUMABLE = frozenset(name for name, role in ROLES.items() if role.resumable)
"""The fields a command that continues a run folder may change: where and how it runs, and ``epochs``."""
INFERRED = frozenset(name for name, role in ROLES.items() if role.inferred)
"""The fields left None until resolved from the data."""
FOLDER_FIELDS = frozenset(name for name, role in ROLES.items() if role.folder)
"""The fields that name the run folder or how to open it: never saved with the run."""
EXPERIMENT = frozenset(name for name, role in ROLES.items() if role.trains and not role.inferred)
"""The settings that make a run another experiment: what it learns, but for what the data decides."""


def _group_of(name: str, where: str) -> str:
    if name not in FIELD_GROUPS:
        near = difflib.get_close_matches(name, FIELD_GROUPS, n=1)
        hint = (
            f"did you mean {near[0]!r}?"
            if near
            else "the keys are the flags' names with '_' (python -m src.train --help)"
        )
        raise ValueError(f"{where}: unknown config key {name!r}; {hint}")
    return FIELD_GROUPS[name]


def config_from_dict(values: dict[str, Any], where: str = "config", typed: bool = False) -> Config:
    """A config from a mapping of flat keys (``lr: 0.01``), of groups (``optim: {lr: 0.01}``), or both.

    Args:
        values: the mapping.
        where: what the errors name (a file).
        typed: check each value against its field's type first (`src.config.typecheck.conform`), as for a file's values.

    Raises:
        ValueError: an unknown key or group field (the message lists the known keys), a value of the wrong type
            (naming the key, the value and the type expected), or a bad value.
    """
    groups: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
    for key, value in values.items():
        if key in GROUPS and isinstance(value, dict):
            for name, field_value in value.items():
                if _group_of(name, where) != key:
                    raise ValueError(f"{where}: {name!r} is a key of group {FIELD_GROUPS[name]!r}, not of {key!r}")
                groups[key][name] = field_value
        else:
            groups[_group_of(key, where)][key] = value
    if typed:
        for fields in groups.values():
            for name, value in fields.items():
                try:
                    fields[name] = typecheck.conform(value, FIELD_TYPES[name])
                except typecheck.WrongType as expected:
                    raise ValueError(f"{where}: key {name!r} = {value!r}: expected {expected}") from None
    return Config(**{name: GROUPS[name](**fields) for name, fields in groups.items()})


OLD_RUN_DEFAULTS: dict[str, Any] = {"batch_aug": False}
"""Fields whose default changed, with the value runs saved before the change trained with: a run folder's
``config.yaml`` without the key resumes as it started (`--batch-aug` became the default on 2026-12-01)."""


def load_config_file(path: str | Path, missing: Mapping[str, Any] | None = None, saved: bool = False) -> Config:
    """Reads a YAML or JSON config file: flat keys (every file written before the groups), groups, or both.

    Args:
        path: the file.
        missing: values (flat names) for the keys the file does not hold, instead of the defaults; a run
            folder's saved config is read with `OLD_RUN_DEFAULTS`.
        saved: the file is a run's own, written whole by `save_config`: one cut short is refused (`check_whole`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid YAML/JSON or not a mapping, is cut short (``saved``), has keys that are
            not config fields (the nearest known key is suggested), or holds a value of the wrong type (naming the
            key, the value and the type expected) or a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}{where}: {problem}"
        ) from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(values).__name__}")
    if saved:
        check_whole(values, path, len(text.splitlines()))
    for name, value in (missing or {}).items():
        group = values.get(FIELD_GROUPS[name])
        if name not in values and not (isinstance(group, dict) and name in group):
            values[name] = value
    return config_from_dict(values, str(path), typed=True)


def check_whole(values: Mapping[str, Any], path: Path, lines: int) -> None:
    """Checks that a run's saved config (grouped, as `save_config` writes it) is not cut short: `save_config`
    writes the groups in `Config`'s order, ``run`` last with ``list_archs`` its last key, so a file cut anywhere
    lacks that key. (Keep ``list_archs`` last in `RunConfig`: every grouped config saved so far ends with it.) A
    file of flat keys, written before the groups, cannot be checked.

    Raises:
        ValueError: the file lacks the last group or its last key, naming what is missing.
    """
    if not any(isinstance(values.get(name), dict) for name in GROUPS):  # "loss", "competition": fields too
        return
    last_group = list(GROUPS)[-1]
    last_key = dataclasses.fields(GROUPS[last_group])[-1].name
    group = values.get(last_group)
    if isinstance(group, dict) and last_key in group:
        return
    absent = [name for name in GROUPS if not isinstance(values.get(name), dict)]
    lacks = f"the groups {', '.join(absent)}" if len(absent) > 1 else f"the key {last_group}.{last_key}"
    raise ValueError(f"{path}: cut short: it ends at line {lines} without {lacks} (a damaged run folder)")


def save_config(config: Config, path: str | Path) -> None:
    """Writes the config as YAML, one mapping per group: enough to repeat the run with ``--config path``."""
    files.write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
