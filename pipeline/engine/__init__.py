"""The session rules (SPEC section 3) and the per-device state they keep: pure, no I/O."""

from pipeline.engine.ids import session_id_for
from pipeline.engine.rules import SessionConfig, SessionRules
from pipeline.engine.state import (
    Applied,
    ClosedSession,
    DeviceState,
    EarlierSession,
    OpenSession,
    Record,
)

__all__ = [
    "Applied",
    "ClosedSession",
    "DeviceState",
    "EarlierSession",
    "OpenSession",
    "Record",
    "SessionConfig",
    "SessionRules",
    "session_id_for",
]
