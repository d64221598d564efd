"""The session rules of SPEC section 3, as pure code.

`SessionRules.apply` applies one event to a device's state (`pipeline.engine.state`) and appends
the records it emits, `SessionRules.expire` closes a session whose deadline has passed,
`deadline` says when the device next needs waking. Nothing here reads a clock or touches Kafka:
offline mode and the Faust worker both drive the same rules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.engine.ids import session_id_for
from pipeline.engine.state import (
    Applied,
    ClosedSession,
    DeviceState,
    EarlierSession,
    OpenSession,
    Record,
)
from pipeline.vocabulary import (
    APP_BACKGROUND,
    APP_FOREGROUND,
    APP_LAUNCH,
    APP_TERMINATE,
    DEFAULT_SESSION_TIMEOUT_S,
    END_FORCE_QUIT,
    END_IDLE,
    END_TERMINATE,
    END_TIMEOUT,
    SESSION_ATTRIBUTE,
    SESSION_END,
    SESSION_START,
)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Timeouts of SPEC section 3: a default, per-app overrides, and the foreground idle limit."""

    session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S
    idle_timeout_s: float = 1800.0
    app_session_timeout_s: Mapping[str, float] = field(default_factory=dict)
    # A partner kit keeps its own fixed timeout: it ignores the SDK's per-event override.
    honor_event_timeout: bool = True
    # Duplicate memory (rule 1): ids of sessions that ended this long before the device's
    # latest event time are remembered, at most this many ids per device.
    dedup_window_s: float = 3600.0
    dedup_max_ids: int = 10_000

    def timeout_ms(self, app_id: str) -> int:
        """The background session timeout of `app_id`, in ms."""
        return _seconds_to_ms(self.app_session_timeout_s.get(app_id, self.session_timeout_s))


def _seconds_to_ms(seconds: float) -> int:
    return round(seconds * 1000)


# What the outputs can carry: JSON writers (orjson) hold integers in this range, and finite floats.
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _representable(value: int | float) -> bool:
    if type(value) is int:
        return _MIN_INT <= value <= _MAX_INT
    return math.isfinite(value)


class SessionRules:
    """Applies SPEC section 3 to device states. Stateless itself: all state is in DeviceState."""

    __slots__ = ("_config", "_dedup_max_ids", "_dedup_window_ms", "_idle_ms")

    def __init__(self, config: SessionConfig) -> None:
        self._config = config
        self._idle_ms = _seconds_to_ms(config.idle_timeout_s)
        self._dedup_window_ms = _seconds_to_ms(config.dedup_window_s)
        self._dedup_max_ids = config.dedup_max_ids

    @property
    def config(self) -> SessionConfig:
        """The timeouts these rules apply."""
        return self._config

    def new_state(self, app_id: str, device_id: str) -> DeviceState:
        """The state of a device never seen before."""
        return DeviceState(app_id, device_id)

    def deadline(self, state: DeviceState) -> int | None:
        """Event time at which the open session expires with no new events (None: nothing open)."""
        session = state.open
        if session is None:
            return None
        if session.foreground_since is None:
            return session.last_ts + session.timeout_ms
        return session.last_ts + self._idle_ms

    def apply(
        self, state: DeviceState, event: Record, out: list[Record], *, in_place: bool = False
    ) -> Applied:
        """Apply one valid event (rules 1-6), appending the records it emits to `out`.

        The enriched record is a copy of `event` with the session fields added; with
        `in_place`, `event` itself becomes it (for callers done with the event: one dict less
        per event on the hot path).
        """
        event_id = event["event_id"]
        session = state.open
        if session is not None and event_id in session.event_ids:
            return Applied.DUPLICATE
        closed = state.last_closed
        if closed is not None and event_id in closed.event_ids:
            return Applied.DUPLICATE
        if state.earlier and any(event_id in e.event_ids for e in state.earlier):
            return Applied.DUPLICATE
        ts: int = event["ts"]
        kind = event["type"]
        if session is not None:  # (`deadline`, inline: this runs for every event)
            if session.foreground_since is None:
                deadline = session.last_ts + session.timeout_ms
            else:
                deadline = session.last_ts + self._idle_ms
            if ts >= deadline:
                self._close_expired(state, out)
                session = None
        if kind == SESSION_ATTRIBUTE:
            refused = self._attribute_refusal(state, event["attribute"])
            if refused is not None:
                return refused
        elif kind == APP_LAUNCH and session is not None:
            self._close(state, END_FORCE_QUIT, out)
            session = None
        if session is None:
            session = self._open(state, event, out)
        self._apply_to_session(session, event, ts, kind)
        if ts > state.latest_ts:
            state.latest_ts = ts
            if state.earlier:
                self._forget_outside_window(state)
        if len(session.event_ids) > self._dedup_max_ids or state.earlier:
            self._forget_past_max_ids(state)
        enriched = event if in_place else event.copy()
        enriched["session_id"] = session.session_id
        enriched["session_number"] = session.session_number
        enriched["session_seq"] = session.event_count
        enriched["session_start_ts"] = session.start_ts
        out.append(enriched)
        if kind == APP_TERMINATE:
            self._close(state, END_TERMINATE, out)
        return Applied.APPLIED

    def expire(self, state: DeviceState, now_ts: int, out: list[Record]) -> bool:
        """Close the open session if its deadline is at or before event time `now_ts`."""
        deadline = self.deadline(state)
        if deadline is None or now_ts < deadline:
            return False
        self._close_expired(state, out)
        return True

    def close_at_end(self, state: DeviceState, out: list[Record]) -> bool:
        """End of input (offline): close the open session as if its deadline had passed."""
        if state.open is None:
            return False
        self._close_expired(state, out)
        return True

    def _close_expired(self, state: DeviceState, out: list[Record]) -> None:
        backgrounded = state.open is not None and state.open.foreground_since is None
        self._close(state, END_TIMEOUT if backgrounded else END_IDLE, out)

    def _attribute_refusal(self, state: DeviceState, change: Mapping[str, Any]) -> Applied | None:
        # Runs after expiry, before any effect: a refused event changes nothing.
        if change["op"] != "increment" or state.open is None:
            return None
        current = state.open.attributes.get(change["key"], 0)
        if not _is_number(current):
            return Applied.ATTRIBUTE_NOT_NUMERIC
        if not _representable(current + change["value"]):
            return Applied.ATTRIBUTE_OUT_OF_RANGE
        return None

    def _open(self, state: DeviceState, event: Record, out: list[Record]) -> OpenSession:
        ts: int = event["ts"]
        number = state.session_count + 1
        state.session_count = number
        app_id = state.app_id
        session = OpenSession(
            session_id=session_id_for(app_id, state.device_id, number, ts, event["event_id"]),
            session_number=number,
            start_ts=ts,
            last_ts=ts,
            timeout_ms=self._config.timeout_ms(app_id),
            foreground_since=None if event["type"] == APP_BACKGROUND else ts,
            counted_until=ts,
        )
        state.open = session
        previous = state.last_closed
        out.append(
            {
                "type": SESSION_START,
                "session_id": session.session_id,
                "app_id": app_id,
                "device_id": state.device_id,
                "user_id": event.get("user_id"),
                "session_number": number,
                "start_ts": ts,
                "previous_session_id": previous.session_id if previous else None,
                "previous_session_start_ts": previous.start_ts if previous else None,
                "previous_session_duration_ms": previous.duration_ms if previous else None,
            }
        )
        return session

    def _apply_to_session(self, session: OpenSession, event: Record, ts: int, kind: str) -> None:
        session.event_count += 1
        session.event_ids[event["event_id"]] = None
        if ts > session.last_ts:
            session.last_ts = ts
        user_id = event.get("user_id")
        if user_id is not None:
            session.user_id = user_id
            if user_id not in session.user_ids:
                session.user_ids.append(user_id)
        if "session_timeout_s" in event:
            timeout_s = event["session_timeout_s"]
            if timeout_s is not None and self._config.honor_event_timeout:
                session.timeout_ms = _seconds_to_ms(timeout_s)
        if kind == APP_BACKGROUND:
            if session.foreground_since is not None:
                session.foreground_ms += max(0, ts - session.foreground_since)
                session.counted_until = max(session.counted_until, ts)
                session.foreground_since = None
        elif kind == APP_FOREGROUND:
            if session.foreground_since is None:
                session.foreground_since = max(ts, session.counted_until)
        elif kind == SESSION_ATTRIBUTE:
            change = event["attribute"]
            key = change["key"]
            if change["op"] == "set":
                session.attributes[key] = change["value"]
            else:
                session.attributes[key] = session.attributes.get(key, 0) + change["value"]

    def _close(self, state: DeviceState, reason: str, out: list[Record]) -> None:
        session = state.open
        assert session is not None
        end_ts = session.last_ts
        foreground_ms = session.foreground_ms
        if session.foreground_since is not None:
            foreground_ms += max(0, end_ts - session.foreground_since)
        duration_ms = end_ts - session.start_ts
        out.append(
            {
                "type": SESSION_END,
                "session_id": session.session_id,
                "app_id": state.app_id,
                "device_id": state.device_id,
                "user_id": session.user_id,
                "user_ids": session.user_ids,
                "session_number": session.session_number,
                "start_ts": session.start_ts,
                "end_ts": end_ts,
                "duration_ms": duration_ms,
                "foreground_ms": foreground_ms,
                "event_count": session.event_count,
                "end_reason": reason,
                "attributes": session.attributes,
            }
        )
        state.open = None
        previous = state.last_closed
        if previous is not None:
            end_ts = previous.start_ts + previous.duration_ms
            state.earlier.append(EarlierSession(end_ts, previous.event_ids))
        state.last_closed = ClosedSession(
            session.session_id, session.start_ts, duration_ms, session.event_ids
        )
        if state.earlier:
            self._forget_outside_window(state)
            self._forget_past_max_ids(state)

    def _forget_outside_window(self, state: DeviceState) -> None:
        # Rule 1: sessions before the last closed one are remembered while they ended at most
        # dedup_window before the device's latest event time (which only grows).
        # Not sorted by end: a late event can open (and so end) a session dated before those
        # closed ahead of it.
        oldest_kept = state.latest_ts - self._dedup_window_ms
        earlier = state.earlier
        if any(e.end_ts < oldest_kept for e in earlier):
            earlier[:] = [e for e in earlier if e.end_ts >= oldest_kept]

    def _forget_past_max_ids(self, state: DeviceState) -> None:
        # At most dedup_max_ids ids: the oldest sessions' ids go first, oldest id first. The
        # open session and the most recently closed one keep theirs (the open one, its newest
        # dedup_max_ids), so the current session always recognises its own retries.
        limit = self._dedup_max_ids
        session = state.open
        if session is not None and len(session.event_ids) > limit:
            ids = session.event_ids
            for event_id in list(itertools.islice(ids, len(ids) - limit)):
                del ids[event_id]
        earlier = state.earlier
        if not earlier:
            return
        kept = len(session.event_ids) if session is not None else 0
        if state.last_closed is not None:
            kept += len(state.last_closed.event_ids)
        excess = kept + sum(len(e.event_ids) for e in earlier) - limit
        while excess > 0 and earlier:
            oldest = earlier[0].event_ids
            if len(oldest) <= excess:
                excess -= len(oldest)
                del earlier[0]
                continue
            for event_id in list(itertools.islice(oldest, excess)):
                del oldest[event_id]
            excess = 0
