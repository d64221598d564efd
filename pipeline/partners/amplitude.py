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
    display_event_name,
    event_properties,
    record_time,
    session_properties,
    session_record_key,
    session_start_ts,
)
from pipeline.vocabulary import SESSION_RECORD_TYPES

FORMAT = "amplitude"
LIBRARY = "sessionize"
# Event types Amplitude gives a meaning of its own; an app event with such a name gets "App ".
RESERVED_EVENT_TYPES = frozenset({"session_start", "session_end"})
RESERVED_EVENT_TYPE_PREFIXES = ("$", "[Amplitude]")  # $identify, [Amplitude] Start Session...


def translate(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Amplitude event object for ``record``."""
    kind = record["type"]
    if kind in SESSION_RECORD_TYPES:
        event_type = kind
        insert_id = session_record_key(record)
        properties = session_properties(record)
    else:
        event_type = display_event_name(record)
        if event_type in RESERVED_EVENT_TYPES or event_type.startswith(
            RESERVED_EVENT_TYPE_PREFIXES
        ):
            event_type = f"App {event_type}"
        insert_id = record["event_id"]
        properties = event_properties(record)
    user_id = record.get("user_id")
    event: dict[str, Any] = {"user_id": user_id} if user_id else {}
    event["device_id"] = record["device_id"]
    event["event_type"] = event_type
    event["time"] = record_time(record)
    event["session_id"] = session_start_ts(record)
    event["insert_id"] = insert_id
    event["event_properties"] = properties
    event["library"] = LIBRARY
    return [event]
