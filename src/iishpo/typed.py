"""Build frozen dataclasses from plain mappings, checking keys and types with clear messages.

The configuration arrives from Hydra as plain dicts whose values may be anything a user
typed (``trainer.max_epochs=abc`` is the string ``'abc'``). Every settings class (the
study, the trainer, each optimizer) is built through :func:`build`, so an unknown or
missing key and a value of the wrong type fail at load time with the key's full name,
what was given and what is allowed, instead of a ``TypeError`` deep inside a job.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A settings mapping does not fit its dataclass; the message names the key."""


def build(cls: type[T], data: Any, where: str) -> T:
    """``cls(**data)`` after checking that every key is known, present and well typed.

    Fields with a default may be left out. Integers are accepted where a float is
    expected; booleans are never numbers. Nested dataclass fields are built recursively.
    Errors raised by the class itself (``__post_init__`` range checks) are re-raised as
    :class:`SettingsError` prefixed with ``where``.
    """
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where} must be a mapping of settings, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    missing = [
        name for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if unknown or missing:
        problems = ([f"unknown keys {unknown}"] if unknown else []) + (
            [f"missing keys {missing}"] if missing else []
        )
        raise SettingsError(f"{where}: {'; '.join(problems)} (allowed: {list(fields)})")
    hints = typing.get_type_hints(cls)
    values = {name: convert(data[name], hints[name], f"{where}.{name}") for name in data}
    try:
        return cls(**values)
    except SettingsError:
        raise
    except ValueError as err:
        raise SettingsError(f"{where}: {err}") from err


def convert(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against ``annotation`` (and normalised: lists become tuples)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return convert(value, option, where)
            except SettingsError:
                continue
        raise SettingsError(_wrong(value, describe(annotation), where))
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, where)  # type: ignore[arg-type]
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise SettingsError(_wrong(value, describe(annotation), where))
        return tuple(convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise SettingsError(_wrong(value, "a mapping", where))
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise SettingsError(_wrong(value, "true or false", where))
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(_wrong(value, "an integer", where))
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(_wrong(value, "a number", where))
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise SettingsError(_wrong(value, "a string", where))
        return value
    raise TypeError(f"{where}: unsupported annotation {annotation!r}")  # a bug, not bad input


def describe(annotation: Any) -> str:
    """A type annotation in words, for error messages."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        words = [describe(a) for a in typing.get_args(annotation) if a is not type(None)]
        nullable = type(None) in typing.get_args(annotation)
        return " or ".join(words) + (" or null" if nullable else "")
    if origin is tuple:
        return f"a list of {describe(typing.get_args(annotation)[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _wrong(value: Any, expected: str, where: str) -> str:
    return f"{where} must be {expected}, got {value!r} ({type(value).__name__})"
