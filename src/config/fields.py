"""What every config group is built from: field roles (`Role`, `setting`), the group base that checks its own
fields, the deferred checks of the command line, and the parsers of comma lists, numbers and durations."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from tyro.constructors import PrimitiveConstructorSpec


def _as_text(value: Any) -> list[str]:
    """How a tuple field's value is shown in ``--help``: comma-separated, as it is typed."""
    if isinstance(value, str):
        return [value]
    return [",".join(":".join(map(str, v)) if isinstance(v, tuple | list) else str(v) for v in value)]


def _comma_list(metavar: str) -> PrimitiveConstructorSpec:
    """One command-line word kept as text; the group's ``__post_init__`` turns it into a typed tuple."""
    return PrimitiveConstructorSpec(
        nargs=1,
        metavar=metavar,
        instance_from_str=lambda args: args[0],
        is_instance=lambda value: isinstance(value, str | tuple | list),
        str_from_instance=_as_text,
    )


Names = Annotated[tuple[str, ...], _comma_list("A,B,...")]
Numbers = Annotated[tuple[float, ...], _comma_list("X,Y,...")]
SizeSchedule = Annotated[tuple[tuple[int, int], ...], _comma_list("SIZE:EPOCH,...")]

_CHECKS_DEFERRED: contextvars.ContextVar[bool] = contextvars.ContextVar("config_checks_deferred", default=False)


@contextlib.contextmanager
def deferred_checks() -> Iterator[None]:
    """Builds groups without checking them, for `src.config.Config.checked` to check afterwards.

    tyro reports a ValueError raised while it builds a nested group in its own multi-line box and exits, which
    would bypass the one-line CLI error policy (`src.cli`); the parser builds the groups inside this block and
    checks the whole config after tyro has returned.
    """
    token = _CHECKS_DEFERRED.set(True)
    try:
        yield
    finally:
        _CHECKS_DEFERRED.reset(token)


def require(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"--{name.replace('_', '-')} {value!r}: expected {expected}")


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float | None:
    """Seconds of a wall time written ``11h30m``, ``20m``, ``90s`` or ``1h``; None when ``text`` is not one."""
    match = _DURATION.fullmatch(str(text).strip().lower())
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return 3600 * hours + 60 * minutes + seconds


def parse_names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(str(part).strip() for part in parts if str(part).strip())


def parse_numbers(name: str, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in (parse_names(value) if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise ValueError(f"--{name.replace('_', '-')} {value!r}: expected comma-separated numbers") from None


def parse_class_names(value: Any) -> tuple[str, ...] | None:
    """``--classes``: the lines of a file, or comma-separated names."""
    if isinstance(value, str) and Path(value).is_file():
        return tuple(line.strip() for line in Path(value).read_text().splitlines() if line.strip())
    return parse_names(value)


def parse_size_schedule(text: Any) -> tuple[tuple[int, int], ...] | None:
    """``--img-size-schedule`` 'SIZE:EPOCH,...' (or (size, epoch) pairs) as (size, epoch) pairs in the given order.

    Raises:
        ValueError: an entry that is not SIZE:EPOCH with SIZE >= 8 and EPOCH >= 0, or an epoch listed twice.
    """
    if text is None or text == "":
        return None
    entries = [e.split(":", 1) if ":" in e else [e, ""] for e in parse_names(text)] if isinstance(text, str) else text
    pairs, epochs = [], set()
    for entry in entries:
        size, epoch = (str(v).strip() for v in entry) if len(entry) == 2 else ("", "")
        if not (size.isdigit() and epoch.isdigit() and int(size) >= 8) or int(epoch) in epochs:
            raise ValueError(
                f"--img-size-schedule {_as_text(text)[0]!r}: bad entry {':'.join(map(str, entry))!r}; expected "
                "SIZE:EPOCH pairs with SIZE >= 8 pixels and distinct 0-based epochs, e.g. '24:0,32:4,40:10'"
            )
        epochs.add(int(epoch))
        pairs.append((int(size), int(epoch)))
    return tuple(pairs)


def format_duration(seconds: float) -> str:
    """``3h 02m``, ``12m 05s`` or ``42.0 s`` (the reverse of `parse_duration`, for people)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


EVAL_MULTIPLE = 4
"""Evaluation batches hold this many training batches by default: no gradients, no optimizer state."""
LOG_EVERY = {"cpu": 1, "cuda": 50}
"""``--log-every auto`` per device type: on a GPU each read of the loss waits for the device."""


@dataclasses.dataclass(frozen=True)
class Role:
    """What a config field is to a run, declared where the field is defined (`setting`). The rules on run folders
    are derived from the declarations (`src.config.RESUMABLE`, `src.config.INFERRED`, `src.config.FOLDER_FIELDS`,
    `src.config.EXPERIMENT`), never kept as lists of names.

    Attributes:
        trains: the field changes what the run learns, its numbers. False: where and how the run runs (device,
            workers, logging, checkpoints, tracking, the competition's files); a continued run may change it.
        resumable: a continued run may change the field; None: when it does not train. ``epochs`` trains and may
            change: a run goes on for more epochs.
        inferred: None until resolved from the data (``num_classes``, ``mean``): a continued run compares it only
            where both sides are resolved, and it is no setting of the experiment.
        folder: names the run folder or how to open it (``--run-name``, ``--resume``, ``--restart``): neither saved
            with the run nor compared.
    """

    trains: bool = True
    resumable: bool | None = None
    inferred: bool = False
    folder: bool = False

    def __post_init__(self) -> None:
        if self.resumable is None:
            object.__setattr__(self, "resumable", not self.trains)


def setting(default: Any, **role: bool) -> Any:
    """A field's default with its `Role` in the field's metadata: ``device: str = setting("auto", trains=False)``.
    A field declared without one trains, and a continued run must keep it."""
    return dataclasses.field(default=default, metadata={"role": Role(**role)})


class Group:
    """A config group: ``__post_init__`` types and checks the fields unless `deferred_checks` is on."""

    def __post_init__(self) -> None:
        if not _CHECKS_DEFERRED.get():
            self.check()

    def check(self) -> None:
        """Types the text fields and checks the value ranges.

        Raises:
            ValueError: naming the flag, its value and what was expected.
        """
