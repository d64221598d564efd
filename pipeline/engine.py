"""The session rules of SPEC section 3, as pure code.

Per-device state is a small serializable value (`DeviceState`); `SessionRules.apply` applies one
event to it and appends the records it emits, `SessionRules.expire` closes a session whose
deadline has passed, `deadline` says when the device next needs waking. Nothing here reads a
clock or touches Kafka: offline mode and the Faust worker both drive the same rules.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

import orjson

APP_LAUNCH: Final = "app_launch"
APP_FOREGROUND: Final = "app_foreground"
APP_BACKGROUND: Final = "app_background"
APP_TERMINATE: Final = "app_terminate"
SESSION_ATTRIBUTE: Final = "session_attribute"

END_TIMEOUT: Final = "timeout"
END_IDLE: Final = "idle"
END_TERMINATE: Final = "terminate"
END_FORCE_QUIT: Final = "force_quit"

_SESSION_NAMESPACE: Final = uuid.UUID("5e55107e-0000-4000-8000-5e55107e0000")
_NAMESPACE_BYTES: Final = _SESSION_NAMESPACE.bytes

Record = dict[str, Any]


class Applied(Enum):
    """What became of an event handed to `SessionRules.apply`."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    ATTRIBUTE_NOT_NUMERIC = "attribute_not_numeric"
    ATTRIBUTE_OUT_OF_RANGE = "attribute_out_of_range"

    @property
    def rejected(self) -> bool:
        """The event was refused: it had no effect and belongs in the dead letters."""
        return self in _REJECTIONS


@dataclass(slots=True)
class OpenSession:
    """The device's open session."""

    session_id: str
    session_number: int
    start_ts: int
    last_ts: int
    timeout_ms: int  # background timeout in force: the app's, or the latest per-event override
    foreground_since: int | None  # None while backgrounded
    foreground_ms: int = 0
    # Foreground time is counted up to here; spans never overlap, even for out-of-order input.
    counted_until: int = 0
    event_count: int = 0
    user_id: str | None = None
    user_ids: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    # Applied ids in application order (a dict: ordered, so the oldest are forgotten first).
    event_ids: dict[str, None] = field(default_factory=dict)


@dataclass(slots=True)
class ClosedSession:
    """What the device remembers of its most recently closed session."""

    session_id: str
    start_ts: int
    duration_ms: int
    event_ids: dict[str, None]


@dataclass(slots=True)
class EarlierSession:
    """Ids of a session closed before the most recent one, kept for the duplicate window."""

    end_ts: int
    event_ids: dict[str, None]


@dataclass(slots=True)
class DeviceState:
    """Everything the rules keep for one (app_id, device_id)."""

    app_id: str
    device_id: str
    session_count: int = 0
    open: OpenSession | None = None
    last_closed: ClosedSession | None = None
    # Sessions before `last_closed` still inside the duplicate window, oldest first.
    earlier: list[EarlierSession] = field(default_factory=list)
    latest_ts: int = 0  # the newest event time applied to the device

    def to_json(self) -> bytes:
        """Serialize (for a Faust table / changelog)."""
        return orjson.dumps(self, default=_encode_default)

    @classmethod
    def from_json(cls, data: bytes) -> DeviceState:
        """Inverse of `to_json`."""
        return cls.from_obj(orjson.loads(data))

    @classmethod
    def from_obj(cls, raw: dict[str, Any]) -> DeviceState:
        """Rebuild a state from its parsed JSON form (states written before the duplicate
        window have no `earlier` or `latest_ts`)."""
        state = cls(raw["app_id"], raw["device_id"], raw["session_count"])
        if (s := raw["open"]) is not None:
            s["event_ids"] = dict.fromkeys(s["event_ids"])
            state.open = OpenSession(**s)
        if (c := raw["last_closed"]) is not None:
            c["event_ids"] = dict.fromkeys(c["event_ids"])
            state.last_closed = ClosedSession(**c)
        state.earlier = [
            EarlierSession(e["end_ts"], dict.fromkeys(e["event_ids"]))
            for e in raw.get("earlier", ())
        ]
        state.latest_ts = raw.get("latest_ts", 0)
        return state


def _encode_default(value: Any) -> Any:
    raise TypeError(f"cannot serialize {type(value).__name__}")


def session_id_for(app_id: str, device_id: str, number: int, start_ts: int, event_id: str) -> str:
    """Deterministic session id: the same input gives the same id, offline or streaming."""
    name = f"{app_id}\x1f{device_id}\x1f{number}\x1f{start_ts}\x1f{event_id}"
    # uuid.uuid5, without building UUID objects: SHA-1 of namespace + name, version 5, RFC 4122.
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Timeouts of SPEC section 3: a default, per-app overrides, and the foreground idle limit."""

    session_timeout_s: float = 60.0
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


_REJECTIONS = frozenset((Applied.ATTRIBUTE_NOT_NUMERIC, Applied.ATTRIBUTE_OUT_OF_RANGE))
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
        deadline = self.deadline(state)
        if deadline is not None and ts >= deadline:
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
                "type": "session_start",
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
                "type": "session_end",
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
        oldest_kept = state.latest_ts - self._dedup_window_ms
        earlier = state.earlier
        while earlier and earlier[0].end_ts < oldest_kept:
            del earlier[0]

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
