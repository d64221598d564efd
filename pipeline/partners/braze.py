"""Braze: one ``/users/track`` event object per canonical record.

Docs followed:
- "Event object", https://braze.com/docs/api/objects_filters/event_object (one of
  ``external_id`` / ``user_alias`` / ``braze_id`` required; ``app_id``; ``name``; ``time`` as
  ISO 8601; ``properties``: names non-empty, at most 255 characters, no leading ``$``; values
  numbers, booleans, datetimes, strings of at most 255 characters, arrays, objects; an
  alias-only profile is only created when ``_update_existing_only`` is false).
- "user alias object", https://braze.com/docs/api/objects_filters/user_alias_object/
  (``{"alias_name", "alias_label"}``; ``alias_name`` at most 236 bytes).
- "Event" (mParticle Braze integration), https://docs.mparticle.com/integrations/braze/event/
  (server-to-server "Forward Session Events": session start and end become custom events
  ``Session Start`` and ``Session End``, and ``session_id`` is sent as a property on session,
  screen view and custom events; screen views are named after the screen, prefixed "Viewed"
  for server-to-server requests unless "Forward Page Name as Braze Event Name" is set; leading
  ``$`` removed from property keys).

Mapping:
- Who: ``external_id`` = user_id when known; otherwise ``user_alias`` =
  ``{"alias_name": device_id, "alias_label": "device_id"}`` with ``_update_existing_only``
  false, so Braze creates the anonymous profile (a device id over 236 bytes is replaced by its
  SHA-256 in hex).
- ``app_id`` = the canonical app_id (the sink may need to map it to a Braze app identifier).
- ``name``: ``Session Start`` / ``Session End``, else ``_common.display_event_name``.
- ``time``: ISO 8601 UTC with milliseconds, e.g. ``2024-06-01T12:00:00.250Z``.
- ``properties``: the canonical ``session_id`` and ``session_number``, then the session's or
  the event's own properties; null values dropped, strings and keys cut to 255 characters.
- Braze has no deduplication key for events: a resent event is counted twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from pipeline.partners._common import (
    Memo,
    cleaned_keys,
    display_event_name,
    event_properties,
    session_properties,
)
from pipeline.vocabulary import SESSION_ATTRIBUTE, SESSION_END, SESSION_START

FORMAT = "braze"

SESSION_EVENT_NAMES: Mapping[str, str] = {
    SESSION_START: "Session Start",
    SESSION_END: "Session End",
}
ALIAS_LABEL = "device_id"
MAX_ALIAS_NAME_BYTES = 236
MAX_PROPERTY_LENGTH = 255
# A str of at most this many characters is at most MAX_ALIAS_NAME_BYTES in UTF-8.
_SURELY_SHORT_ALIAS = MAX_ALIAS_NAME_BYTES // 4

_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


def iso_time(epoch_ms: int) -> str:
    """``epoch_ms`` as ISO 8601 UTC with milliseconds: ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    seconds, millis = divmod(epoch_ms, 1000)
    return _ISO_SECONDS[seconds] + _MILLIS[millis]


def _iso_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _event_name(kind_and_name: tuple[str, str | None]) -> str:
    kind, name = kind_and_name
    return display_event_name({"type": kind, "name": name})


# Records come in arrival order, so the same seconds recur: formatting one costs ~0.8 us.
_ISO_SECONDS = Memo(_iso_second, 1 << 14)
_EVENT_NAMES = Memo(_event_name)


def alias_name(device_id: str) -> str:
    """``device_id`` when it fits Braze's alias name limit, else its SHA-256 in hex."""
    if len(device_id) <= _SURELY_SHORT_ALIAS:
        return device_id
    encoded = device_id.encode()
    if len(encoded) <= MAX_ALIAS_NAME_BYTES:
        return device_id
    return hashlib.sha256(encoded).hexdigest()


def _user_alias(device_id: str) -> dict[str, str]:
    return {"alias_name": alias_name(device_id), "alias_label": ALIAS_LABEL}


# A device's alias object, shared by its records (records are never changed once emitted):
# a device's events come together, so one lookup replaces a call and a dict per record.
_USER_ALIASES = Memo(_user_alias, 1 << 14)


def translate(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Braze event object for ``record``."""
    kind = record["type"]
    if kind == SESSION_START:
        name, epoch_ms = SESSION_EVENT_NAMES[kind], record["start_ts"]
        extra = session_properties(record)
    elif kind == SESSION_END:
        name, epoch_ms = SESSION_EVENT_NAMES[kind], record["end_ts"]
        extra = session_properties(record)
    else:
        name, epoch_ms = _EVENT_NAMES[kind, record.get("name")], record["ts"]
        attributes = record.get("attributes")
        # A plain event's attributes are read, not copied: nothing here changes them.
        if kind != SESSION_ATTRIBUTE and type(attributes) is dict:
            extra = attributes
        elif attributes is None and kind != SESSION_ATTRIBUTE:  # most events: no attributes
            extra = {}
        else:
            extra = event_properties(record)
    properties = _properties(record, extra)
    user_id = record.get("user_id")
    if user_id:
        return [
            {
                "external_id": user_id,
                "app_id": record["app_id"],
                "name": name,
                "time": iso_time(int(epoch_ms)),
                "properties": properties,
            }
        ]
    return [
        {
            "user_alias": _USER_ALIASES[record["device_id"]],
            "_update_existing_only": False,
            "app_id": record["app_id"],
            "name": name,
            "time": iso_time(int(epoch_ms)),
            "properties": properties,
        }
    ]


def _properties(record: Mapping[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The session fields, then ``extra`` without nulls, keys and strings fitted to Braze."""
    properties: dict[str, Any] = {
        "session_id": record["session_id"],
        "session_number": record["session_number"],
    }
    limit = MAX_PROPERTY_LENGTH
    for key, value in extra.items():
        if not key or key[0] == "$" or len(key) > limit:
            # A key to clean (rare): cleaning can merge keys, so it sees them all at once.
            return _properties(record, cleaned_keys(extra, limit))
        if value is None:
            continue
        if isinstance(value, str) and len(value) > limit:
            value = value[:limit]
        if key not in properties:
            properties[key] = value
    return properties
