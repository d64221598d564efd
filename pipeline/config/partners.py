"""The `[[partners]]` tables of the config file, checked and turned into `Partner`s."""

from __future__ import annotations

import re
from typing import Any

from pipeline.config.keys import ConfigError, cut_short
from pipeline.partners import FORMATS, Partner

_PARTNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def configured_partners(tables: list[dict[str, Any]]) -> list[Partner]:
    """The partners of `tables` (keys already checked): named for files, one topic each."""
    partners: list[Partner] = []
    names: set[str] = set()
    topics: dict[str, str] = {}
    for index, table in enumerate(tables):
        for required in ("name", "format"):
            if required not in table:
                raise ConfigError(f"partners[{index}] has no '{required}'")
        name, fmt = table["name"], table["format"]
        if not _PARTNER_NAME.fullmatch(name):
            raise ConfigError(
                f"partner name {cut_short(repr(name))} must be letters, digits, '.', '_' or '-' "
                "(it names a file)"
            )
        if fmt not in FORMATS:
            known = ", ".join(sorted(FORMATS))
            raise ConfigError(f"partner '{name}': unknown format '{fmt}' (known: {known})")
        if name in names:
            raise ConfigError(f"two partners are named '{name}'")
        topic = table.get("topic", f"partner.{name}")
        if topic in topics:
            raise ConfigError(f"partners '{topics[topic]}' and '{name}' both write topic '{topic}'")
        names.add(name)
        topics[topic] = name
        timeout = table.get("session_timeout_s")
        partners.append(
            Partner(
                name=name,
                format=fmt,
                topic=topic,
                event_types=_string_set(table, "event_types", name),
                sessions=table.get("sessions", True),
                attributes_allowlist=_string_set(table, "attributes_allowlist", name),
                session_timeout_s=None if timeout is None else float(timeout),
            )
        )
    return partners


def _string_set(table: dict[str, Any], key: str, partner: str) -> frozenset[str] | None:
    if key not in table:
        return None
    values = table[key]
    if not all(isinstance(v, str) for v in values):
        raise ConfigError(f"partner '{partner}': '{key}' must be a list of strings")
    return frozenset(values)
