"""What the session rules keep per device (SPEC section 3): small dataclasses, no behaviour.

`DeviceState` is one (app_id, device_id): its open session, its last closed one, and the ids of
earlier sessions still inside the duplicate window. The changelog's codec for it lives with the
streaming adapter (`pipeline.streaming.codec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

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


_REJECTIONS = frozenset((Applied.ATTRIBUTE_NOT_NUMERIC, Applied.ATTRIBUTE_OUT_OF_RANGE))


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
