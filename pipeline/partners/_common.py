"""Helpers shared by the partner formats: record kinds, event names, property dictionaries.

Event names for the lifecycle events follow mParticle's own forwarding of application state
transitions and screen views, since this project forwards the same events mParticle does:

- "Event" (mParticle Amplitude integration), https://docs.mparticle.com/integrations/amplitude/event/
  ("Application State Transition Forwarding": Application Initialized / Exit / Background /
  Foreground; "Screen Views": "Viewed ScreenName").
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeGuard, TypeVar

from pipeline.vocabulary import (
    APP_BACKGROUND,
    APP_FOREGROUND,
    APP_LAUNCH,
    APP_TERMINATE,
    COMMERCE_EVENT,
    CUSTOM_EVENT,
    SCREEN_VIEW,
    SESSION_ATTRIBUTE,
    SESSION_START,
)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(dict[K, V], Generic[K, V]):
    """Values of ``compute`` by argument, emptied when it holds ``limit`` of them.

    Event names, param names and timestamps' seconds recur from record to record: a hit is
    one C-level dict lookup, cheaper than ``functools.lru_cache``'s call with a tuple key.
    """

    def __init__(self, compute: Callable[[K], V], limit: int = 4096) -> None:
        super().__init__()
        self.compute = compute
        self.limit = limit

    def __missing__(self, key: K) -> V:
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.compute(key)
        return value


# mParticle's names for app state transitions; session_attribute has no mParticle counterpart.
APP_STATE_EVENT_NAMES: Mapping[str, str] = {
    APP_LAUNCH: "Application Initialized",
    APP_FOREGROUND: "Application Foreground",
    APP_BACKGROUND: "Application Background",
    APP_TERMINATE: "Application Exit",
    SESSION_ATTRIBUTE: "Session Attribute",
}

# Event types a partner names by their `name` (by their type when they have none).
NAMED_EVENT_TYPES: frozenset[str] = frozenset((CUSTOM_EVENT, COMMERCE_EVENT))

_PREVIOUS_SESSION_FIELDS = (
    "previous_session_id",
    "previous_session_start_ts",
    "previous_session_duration_ms",
)


def display_event_name(record: Mapping[str, Any]) -> str:
    """Title-case event name of an enriched event, as mParticle forwards it to partners.

    Screen views become "Viewed <name>", custom and commerce events keep their ``name`` (their
    type when they have none), lifecycle events get mParticle's app state transition names.
    """
    kind: str = record["type"]
    name = record.get("name")
    if kind == SCREEN_VIEW:
        return f"Viewed {name}" if name else "Viewed Screen"
    if kind in NAMED_EVENT_TYPES:
        return name if name else kind
    return APP_STATE_EVENT_NAMES[kind]


def event_properties(record: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict of an enriched event's properties: a session_attribute's change, then attributes.

    Fixed keys come first and win over attributes of the same name.
    """
    if record["type"] == SESSION_ATTRIBUTE and _is_mapping(change := record.get("attribute")):
        fixed = {
            "attribute_key": change.get("key"),
            "attribute_op": change.get("op"),
            "attribute_value": change.get("value"),
        }
        return merged(fixed, record.get("attributes"))
    attributes = record.get("attributes")
    if attributes is None:
        return {}
    return dict(attributes) if _is_mapping(attributes) else {}


def session_properties(record: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict describing a session record: its own fields first, then its attributes."""
    if record["type"] == SESSION_START:
        properties: dict[str, Any] = {"session_number": record["session_number"]}
        for key in _PREVIOUS_SESSION_FIELDS:
            value = record.get(key)
            if value is not None:
                properties[key] = value
        return properties
    fixed = {
        "session_number": record["session_number"],
        "duration_ms": record["duration_ms"],
        "foreground_ms": record["foreground_ms"],
        "event_count": record["event_count"],
        "end_reason": record["end_reason"],
    }
    return merged(fixed, record.get("attributes"))


def merged(fixed: dict[str, Any], attributes: Any) -> dict[str, Any]:
    """``fixed`` (changed in place) followed by the ``attributes`` whose keys it lacks."""
    if _is_mapping(attributes):
        for key, value in attributes.items():
            fixed.setdefault(key, value)
    return fixed


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    # Records are dicts (from orjson); the ABC check is for the rare other Mapping, and slow.
    return type(value) is dict or isinstance(value, Mapping)


def session_record_key(record: Mapping[str, Any]) -> str:
    """Stable dedup key of a session record: ``<session_id>:start`` or ``<session_id>:end``."""
    suffix = "start" if record["type"] == SESSION_START else "end"
    return f"{record['session_id']}:{suffix}"


def cleaned_keys(properties: dict[str, Any], max_length: int) -> dict[str, Any]:
    """``properties`` with keys Mixpanel and Braze accept: no leading ``$``, 1..max_length chars.

    Both partners reserve ``$`` names. Returns the same dict when every key already fits. When
    two keys clean to the same name the first one wins, so fixed properties placed first stay.
    """
    if not properties or all(
        key and key[0] != "$" and len(key) <= max_length for key in properties
    ):
        return properties
    cleaned: dict[str, Any] = {}
    for key, value in properties.items():
        name = key.lstrip("$")[:max_length]
        if name:
            cleaned.setdefault(name, value)
    return cleaned
