"""Partner formats: pure functions from canonical records (SPEC section 4) to partner records.

Each public submodule of this package is one partner format. It defines ``FORMAT`` (the name
used in the config file) and ``translate(record) -> list[dict]``; the registry ``FORMATS`` is
built by discovering those modules, so adding a partner touches one new module, its schema
(``schemas/partners/<format>.schema.json``) and its test. Modules whose name starts with ``_``
hold shared helpers and are not formats.

``partner_records`` applies a partner's filters (session records on or off, event types,
attribute allowlist) and then its format. It never mutates the record it is given.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pipeline.vocabulary import SESSION_ATTRIBUTE, SESSION_RECORD_TYPES

Translate = Callable[[Mapping[str, Any]], list[dict[str, Any]]]


def _discover_formats() -> Mapping[str, Translate]:
    """Import every public submodule and register its ``translate`` under its ``FORMAT``."""
    formats: dict[str, Translate] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        name = getattr(module, "FORMAT", None)
        translate = getattr(module, "translate", None)
        if not isinstance(name, str) or not callable(translate):
            raise TypeError(f"{module.__name__} must define FORMAT: str and translate(record)")
        if name in formats:
            raise ValueError(f"partner format {name!r} is defined twice")
        formats[name] = translate
    return MappingProxyType(dict(sorted(formats.items())))


FORMATS: Mapping[str, Translate] = _discover_formats()


@dataclass(frozen=True, slots=True)
class Partner:
    """One configured partner: where its records go and which records it gets.

    ``event_types`` filters enriched events by their ``type`` (None: all types); ``sessions``
    says whether session_start/session_end records go to it. ``attributes_allowlist`` keeps only
    those keys of an enriched event's or a session_end's ``attributes`` (None: all), and drops
    ``session_attribute`` events whose key is not allowed. ``session_timeout_s`` is read by the
    engine (None: the pipeline's timeout), not here.
    """

    name: str
    format: str
    topic: str
    event_types: frozenset[str] | None = None
    sessions: bool = True
    attributes_allowlist: frozenset[str] | None = None
    session_timeout_s: float | None = None
    # Its format's translate when no filter applies (every record goes through it), else None.
    unfiltered: Translate | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            known = ", ".join(FORMATS)
            raise ValueError(f"partner {self.name!r}: unknown format {self.format!r} ({known})")
        if self.sessions and self.event_types is None and self.attributes_allowlist is None:
            object.__setattr__(self, "unfiltered", FORMATS[self.format])


def partner_records(partner: Partner, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The records ``partner`` gets for one canonical record: empty when its filters drop it."""
    translate = partner.unfiltered
    if translate is not None:  # the usual partner: called for every record of every partner
        return translate(record)
    kind = record["type"]
    if kind in SESSION_RECORD_TYPES:
        if not partner.sessions:
            return []
    elif partner.event_types is not None and kind not in partner.event_types:
        return []
    allowlist = partner.attributes_allowlist
    if allowlist is not None:
        allowed = _with_allowed_attributes(record, allowlist)
        if allowed is None:
            return []
        record = allowed
    return FORMATS[partner.format](record)


def _with_allowed_attributes(
    record: Mapping[str, Any], allowlist: frozenset[str]
) -> Mapping[str, Any] | None:
    """``record`` with only allowed attribute keys (a copy when any is dropped), or None."""
    change = record.get("attribute")
    if (
        record["type"] == SESSION_ATTRIBUTE
        and isinstance(change, Mapping)
        and change.get("key") not in allowlist
    ):
        return None
    attributes = record.get("attributes")
    if not isinstance(attributes, Mapping) or all(key in allowlist for key in attributes):
        return record
    kept = {key: value for key, value in attributes.items() if key in allowlist}
    return {**record, "attributes": kept}


def default_partners() -> list[Partner]:
    """One partner per known format, named after it, writing to ``partner.<name>``."""
    return [Partner(name=name, format=name, topic=f"partner.{name}") for name in FORMATS]
