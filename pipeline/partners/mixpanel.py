"""Mixpanel: one Import API event per canonical record.

Docs followed:
- "Import Events", https://docs.mixpanel.com/reference/import-events.md (event objects
  ``{"event", "properties": {"time", "distinct_id", "$insert_id", ...}}``; ``time`` in seconds
  or milliseconds since epoch; ``$insert_id`` at most 36 characters, alphanumeric or ``-``).
- "400 bad request", https://docs.mixpanel.com/troubleshooting/errors/400-bad-request
  (``$insert_id`` is required on every event; without a natural id, hash what makes the event
  unique and use the first 36 characters of the hash).
- "Identifying Users (Simplified)", https://docs.mixpanel.com/docs/tracking-methods/identifying-users
  (``$device_id`` and ``$user_id`` event properties; ``distinct_id`` is the user id when known,
  else the device id with Mixpanel's ``$device:`` prefix).
- "Event" (mParticle Mixpanel integration), https://docs.mparticle.com/integrations/mixpanel/event/
  (session start and end forwarded as separate events, by default named ``session-start`` and
  ``session-end``; insert id set from the mParticle event id).

Mapping:
- ``event``: ``session-start`` / ``session-end`` for session records, else
  ``_common.display_event_name`` ("Viewed Home", "Add To Cart", "Application Background").
- ``properties``: ``time`` (ms), ``distinct_id``, ``$insert_id``, ``$device_id``, ``$user_id``
  when known, the canonical ``session_id`` and ``session_number``, then the session's or the
  event's own properties. Attribute keys lose their leading ``$`` (Mixpanel reserves ``$``
  names) and can never override these fields; an attribute named ``token`` is dropped, since
  Mixpanel reads ``properties.token`` as the project token.
- ``$insert_id``: the event's ``event_id`` when it already fits Mixpanel's rule, else the first
  36 hex characters of its SHA-256; session records hash ``<session_id>:start`` / ``:end``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from pipeline.partners._common import (
    Memo,
    cleaned_keys,
    display_event_name,
    event_properties,
    session_properties,
    session_record_key,
)
from pipeline.vocabulary import SESSION_ATTRIBUTE, SESSION_END, SESSION_RECORD_TYPES, SESSION_START

FORMAT = "mixpanel"

SESSION_EVENT_NAMES: Mapping[str, str] = {
    SESSION_START: "session-start",
    SESSION_END: "session-end",
}
MAX_INSERT_ID_LENGTH = 36
MAX_PROPERTY_NAME_LENGTH = 255

_VALID_INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")


def insert_id(key: str) -> str:
    """``key`` when Mixpanel accepts it as ``$insert_id``, else 36 hex chars of its SHA-256."""
    # str methods first: ~3x cheaper than the regex for the usual event id.
    if len(key) <= MAX_INSERT_ID_LENGTH and key.isascii() and key.replace("-", "").isalnum():
        return key
    if _VALID_INSERT_ID.fullmatch(key):
        return key
    return hashlib.sha256(key.encode()).hexdigest()[:MAX_INSERT_ID_LENGTH]


def event_name(kind_and_name: tuple[str, str | None]) -> str:
    """The ``event`` of an enriched event of this type and name."""
    kind, name = kind_and_name
    # "$"-names are Mixpanel's own, some with side effects ($merge, $identify)
    return display_event_name({"type": kind, "name": name}).lstrip("$") or kind


_EVENT_NAMES = Memo(event_name)


def translate(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Mixpanel event for ``record``."""
    kind = record["type"]
    if kind in SESSION_RECORD_TYPES:
        name = SESSION_EVENT_NAMES[kind]
        time = record["start_ts"] if kind == SESSION_START else record["end_ts"]
        dedup_key = insert_id(session_record_key(record))
        extra = session_properties(record)
    else:
        name = _EVENT_NAMES[kind, record.get("name")]
        time = record["ts"]
        dedup_key = insert_id(record["event_id"])
        attributes = record.get("attributes")
        # A plain event's attributes are read, not copied: nothing here changes them.
        if kind != SESSION_ATTRIBUTE and type(attributes) is dict:
            extra = attributes
        elif attributes is None and kind != SESSION_ATTRIBUTE:  # most events: no attributes
            extra = {}
        else:
            extra = event_properties(record)
    user_id = record.get("user_id")
    device_id = record["device_id"]
    properties: dict[str, Any]
    if user_id:
        properties = {
            "time": int(time),
            "distinct_id": user_id,
            "$insert_id": dedup_key,
            "$device_id": device_id,
            "$user_id": user_id,
            "session_id": record["session_id"],
            "session_number": record["session_number"],
        }
    else:
        properties = {
            "time": int(time),
            "distinct_id": f"$device:{device_id}",
            "$insert_id": dedup_key,
            "$device_id": device_id,
            "session_id": record["session_id"],
            "session_number": record["session_number"],
        }
    _add_properties(properties, extra)
    return [{"event": name, "properties": properties}]


def _add_properties(properties: dict[str, Any], extra: dict[str, Any]) -> None:
    """Add ``extra`` to ``properties`` with Mixpanel's keys; fields already there stay."""
    limit = MAX_PROPERTY_NAME_LENGTH
    for key, value in extra.items():
        if not key or key[0] == "$" or len(key) > limit:
            # A key to clean (rare): cleaning can merge keys, so it sees them all at once.
            _add_properties(properties, cleaned_keys(extra, limit))
            return
        # Mixpanel reads properties.token as the project token.
        if key != "token" and key not in properties:
            properties[key] = value
