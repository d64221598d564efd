"""What a config key accepts, and the one-line error of a value that cannot be used.

A section's keys are the fields of its settings dataclass (`section_keys`): the field's type
says which TOML types a key takes, one declaration per number says its range, and the
dataclass's default is the key's default. Errors show a value cut short, a secret never.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


class ConfigError(Exception):
    """A setting that cannot be used; the message is one line for a person."""


@dataclass(frozen=True, slots=True)
class Setting:
    """What one config key accepts: its types and, for a number, its range (inclusive)."""

    types: tuple[type, ...]
    low: float | None = None
    high: float | None = None
    above_low: bool = False  # low itself is refused (tick_s > 0)
    choices: tuple[str, ...] = ()
    secret: bool = False  # its value never appears in an error

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` ("must be ..."), or None when it can be used."""
        if not _has_type(value, self.types):
            return "must be " + " or ".join(t.__name__ for t in self.types)
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if isinstance(value, int | float) and not self._in_range(value):
            return f"must be {self._range()}"
        return None

    def shown(self, value: Any) -> str:
        """`value` as an error may show it: a secret only by its kind, others cut short."""
        return _kind(value) if self.secret else cut_short(repr(value))

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.above_low else value < self.low):
            return False
        return self.high is None or value <= self.high

    def _range(self) -> str:
        if self.high is not None:
            return f"between {_number(self.low)} and {_number(self.high)}"
        return f"{'greater than' if self.above_low else 'at least'} {_number(self.low)}"


# Declarations of what a key accepts beyond its field's type (`section_keys` adds the type).
def between(low: float, high: float) -> Setting:
    """A number from `low` to `high`, both included."""
    return Setting((), low, high)


def at_least(low: float) -> Setting:
    """A number no smaller than `low`."""
    return Setting((), low)


def above(low: float) -> Setting:
    """A number greater than `low`."""
    return Setting((), low, above_low=True)


def one_of(*choices: str) -> Setting:
    """One of the strings `choices`."""
    return Setting((), choices=choices)


SECRET = Setting((), secret=True)
TABLE = Setting((dict,))  # a key holding tables of its own ([sessions.apps."<app_id>"])

# The TOML (and environment) values a field of each type accepts; an array stands for a set.
_ACCEPTED: dict[Any, tuple[type, ...]] = {
    str: (str,),
    str | None: (str,),
    bool: (bool,),
    int: (int,),
    float: (int, float),
    float | None: (int, float),
    frozenset[str] | None: (list,),
}


def section_keys(
    settings: type[Any], declared: Mapping[str, Setting], not_keys: Collection[str] = ()
) -> dict[str, Setting]:
    """What each key of a section accepts, in field order: one key per field of the dataclass
    `settings` but `not_keys` (fields set another way), typed by the field, with its
    declaration from `declared`. A number without a declared range, or a declaration of no
    field, is a mistake in the code: TypeError, at import."""
    hints = typing.get_type_hints(settings)
    keys: dict[str, Setting] = {}
    for settings_field in fields(settings):
        name = settings_field.name
        if not settings_field.init or name in not_keys:
            continue
        declaration = declared.get(name, Setting(()))
        keys[name] = replace(declaration, types=_ACCEPTED[hints[name]])
        if int in keys[name].types and declaration.low is None:
            raise TypeError(f"{settings.__name__}.{name}: a number needs a declared range")
    undeclared = set(declared) - set(keys)
    if undeclared:
        raise TypeError(f"{settings.__name__} has no config fields {sorted(undeclared)}")
    return keys


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_KINDS |= {list: "a list", dict: "a table"}
_SHOWN_CHARS = 40


def cut_short(text: str) -> str:
    """`text` as an error shows it: at most a few dozen characters."""
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), f"a {type(value).__name__}")


def _number(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{value:.0f}"
