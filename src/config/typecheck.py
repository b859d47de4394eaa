"""Values read from a config file, checked against the type annotations of the fields they fill.

A YAML or JSON file holds whatever its author wrote (``lr: fast``, ``epochs: 2.5``, ``amp: yes``); the flags are
typed by `tyro`, the files by `conform`, so a wrong type is one line naming the key, the value and the type
expected instead of a ``TypeError`` deep in a check. Scalars the file format reads as another type than meant are
taken as meant: ``1e-3`` (text in YAML 1.1) for a float, ``500`` for a text field such as ``--checkpoint-every``.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal


class WrongType(ValueError):
    """A value that its field's type does not allow; the message says what the type allows."""


def conform(value: Any, hint: Any) -> Any:
    """``value`` as the annotation ``hint`` types it (``str | None``, ``int | Literal['auto']``, ``float``, ...).

    Comma-separated list fields (``Annotated[tuple[...], ...]``) take text, a list or a scalar as text; their
    group's check types the items.

    Raises:
        WrongType: the type does not allow the value (the message is `describe` of ``hint``).
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return conform(value, option)
            except WrongType:
                continue
    elif origin is Literal:
        if any(value == choice and type(value) is type(choice) for choice in typing.get_args(hint)):
            return value
    elif origin is Annotated:
        if isinstance(value, str | list | tuple):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    elif hint is type(None):
        if value is None:
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
    elif hint is float:
        return _float(value, hint)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    raise WrongType(describe(hint))


def _float(value: Any, hint: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise WrongType(describe(hint))


def describe(hint: Any) -> str:
    """What an annotation allows, in words: ``a number (float) or None``, ``one of 'adamw', 'adam', 'sgd'``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(option) for option in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(hint))
    if origin is Annotated:
        return "comma-separated text or a list"
    words = {type(None): "None", bool: "true or false", int: "an integer", float: "a number (float)", str: "text"}
    return words.get(hint, str(hint))
