"""One device's session as the worker holds it, for `GET /sessions/{app_id}/{device_id}`.

`device_view` is the one place that reads the streaming core's device state for the lookup:
what the worker has applied so far (in memory, possibly ahead of the last commit by up to
`commit_interval_s`), else what the table holds for the device.
"""

from __future__ import annotations

from typing import Any

from pipeline.streaming.codec import DeviceEntry, table_key
from pipeline.streaming.core import StreamingCore


def device_view(core: StreamingCore, app_id: str, device_id: str) -> dict[str, Any] | None:
    """The device's open session, else its last closed one; None for a device not held here."""
    key = table_key(app_id, device_id)
    entry = core.devices.get(key)
    if entry is None:
        stored = core.stored.get(key)
        if not stored:
            return None
        entry = DeviceEntry.from_value(stored, key)
    state = entry.states[0]  # the pipeline's own sessions (the others are partner kits')
    view: dict[str, Any] = {
        "app_id": app_id,
        "device_id": device_id,
        "partition": entry.partition,
        "sessions_so_far": state.session_count,
        "open_session": None,
        "last_closed_session": None,
    }
    session = state.open
    if session is not None:
        rules = core.processor.profiles[0].rules
        view["open_session"] = {
            "session_id": session.session_id,
            "session_number": session.session_number,
            "start_ts": session.start_ts,
            "last_event_ts": session.last_ts,
            "state": "background" if session.foreground_since is None else "foreground",
            "deadline_ts": rules.deadline(state),
            "event_count": session.event_count,
            "user_id": session.user_id,
            "attributes": session.attributes,
        }
    closed = state.last_closed
    if closed is not None:
        view["last_closed_session"] = {
            "session_id": closed.session_id,
            # The one before the open session, or the device's latest.
            "session_number": state.session_count - (1 if session is not None else 0),
            "start_ts": closed.start_ts,
            "end_ts": closed.start_ts + closed.duration_ms,
            "duration_ms": closed.duration_ms,
        }
    return view
