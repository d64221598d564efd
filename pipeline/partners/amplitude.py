"""Amplitude: one HTTP V2 API event object per canonical record.

Docs followed:
- "HTTP V2 API", https://amplitude.com/docs/apis/analytics/http-v2 (event keys ``user_id``,
  ``device_id``, ``event_type``, ``time`` in ms, ``session_id``, ``insert_id``,
  ``event_properties``, ``library``; ``insert_id`` deduplicates per ``device_id`` for 7 days).
- "Track sessions", https://amplitude.com/docs/data/sources/instrument-track-sessions
  (``session_id`` is the session's start time in ms since epoch; HTTP API senders set it).
- "Missing insert_id or session_id: engineering solution",
  https://amplitude.com/docs/data/data-assistant-user-solutions/event-identifiers-engineering
  (one stable ``insert_id`` per logical event, reused on retries).
- "Event" (mParticle Amplitude integration), https://docs.mparticle.com/integrations/amplitude/event/
  (session start/end forwarded as event types ``session_start``/``session_end``; screen views as
  "Viewed ScreenName"; app state transitions as "Application Initialized" etc.; ``library``).

Mapping:
- session_start -> ``session_start`` at ``start_ts``; session_end -> ``session_end`` at
  ``end_ts``, with duration, foreground time, event count, end reason and the session's
  attributes in ``event_properties``.
- enriched events -> ``event_type`` from ``_common.display_event_name`` at ``ts``, their
  ``attributes`` as ``event_properties``. An app event named like one of Amplitude's own
  (``session_start``, ``session_end``, ``$...``, ``[Amplitude] ...``) is prefixed "App ".
- ``session_id`` = session start (ms) on every record; ``insert_id`` = the event's
  ``event_id``, or ``<session_id>:start`` / ``<session_id>:end`` for session records.
- ``user_id`` only when known. Amplitude rejects ``user_id``/``device_id`` shorter than 5
  characters unless the upload request sets ``options.min_id_length``: the sink's business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.partners._common import (
    Memo,
    display_event_name,
    event_properties,
    session_properties,
    session_record_key,
)
from pipeline.vocabulary import SESSION_ATTRIBUTE, SESSION_END, SESSION_START

FORMAT = "amplitude"
LIBRARY = "sessionize"
# Event types Amplitude gives a meaning of its own; an app event with such a name gets "App ".
RESERVED_EVENT_TYPES = frozenset({"session_start", "session_end"})
RESERVED_EVENT_TYPE_PREFIXES = ("$", "[Amplitude]")  # $identify, [Amplitude] Start Session...


def event_type(kind_and_name: tuple[str, str | None]) -> str:
    """The ``event_type`` of an enriched event of this type and name."""
    kind, name = kind_and_name
    display = display_event_name({"type": kind, "name": name})
    if display in RESERVED_EVENT_TYPES or display.startswith(RESERVED_EVENT_TYPE_PREFIXES):
        return f"App {display}"
    return display


_EVENT_TYPES = Memo(event_type)


def translate(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Amplitude event object for ``record``."""
    # One dict display per record (the hot path of every partner-enabled run).
    kind = record["type"]
    if kind == SESSION_START:
        event_kind, start = kind, record["start_ts"]
        time, insert_id = start, session_record_key(record)
        properties = session_properties(record)
    elif kind == SESSION_END:
        event_kind, start = kind, record["start_ts"]
        time, insert_id = record["end_ts"], session_record_key(record)
        properties = session_properties(record)
    else:
        event_kind, start = _EVENT_TYPES[kind, record.get("name")], record["session_start_ts"]
        time, insert_id = record["ts"], record["event_id"]
        attributes = record.get("attributes")
        if kind != SESSION_ATTRIBUTE and type(attributes) is dict:
            properties = attributes.copy()
        elif attributes is None and kind != SESSION_ATTRIBUTE:  # most events: no attributes
            properties = {}
        else:
            properties = event_properties(record)
    user_id = record.get("user_id")
    if user_id:
        return [
            {
                "user_id": user_id,
                "device_id": record["device_id"],
                "event_type": event_kind,
                "time": int(time),
                "session_id": int(start),
                "insert_id": insert_id,
                "event_properties": properties,
                "library": LIBRARY,
            }
        ]
    return [
        {
            "device_id": record["device_id"],
            "event_type": event_kind,
            "time": int(time),
            "session_id": int(start),
            "insert_id": insert_id,
            "event_properties": properties,
            "library": LIBRARY,
        }
    ]
