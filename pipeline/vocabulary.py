"""The words of SPEC.md, defined once: event types, record types, end reasons, time bounds.

Every module that needs one of these imports it from here; tests state the spec's values on
their own, so that a change here that breaks the contract fails them.
"""

from __future__ import annotations

import time
from typing import Final

# Input event types with a meaning for sessions (SPEC 1, 3); any other type is just an event.
APP_LAUNCH: Final = "app_launch"
APP_FOREGROUND: Final = "app_foreground"
APP_BACKGROUND: Final = "app_background"
APP_TERMINATE: Final = "app_terminate"
SESSION_ATTRIBUTE: Final = "session_attribute"

# Output record types (SPEC 4): the session records, and the enriched events beside them.
SESSION_START: Final = "session_start"
SESSION_END: Final = "session_end"
SESSION_RECORD_TYPES: Final = frozenset((SESSION_START, SESSION_END))

# Why a session ended (SPEC 3).
END_TIMEOUT: Final = "timeout"
END_IDLE: Final = "idle"
END_TERMINATE: Final = "terminate"
END_FORCE_QUIT: Final = "force_quit"

# Event times before this are refused (SPEC 2: timestamp_out_of_range).
MIN_TS_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z

# Session timeouts, the default's and an event's own `session_timeout_s` (SPEC 1, 3).
DEFAULT_SESSION_TIMEOUT_S: Final = 60.0
MIN_SESSION_TIMEOUT_S: Final = 1
MAX_SESSION_TIMEOUT_S: Final = 86_400


def wall_ms() -> int:
    """The wall clock in ms since the epoch (processing time, never event time)."""
    return time.time_ns() // 1_000_000
