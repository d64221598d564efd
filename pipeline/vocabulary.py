"""The words of SPEC.md, defined once: event and record types, end and reject reasons, bounds.

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
# The other event types of SPEC 1: plain events, carried into their session.
SCREEN_VIEW: Final = "screen_view"
CUSTOM_EVENT: Final = "custom_event"
COMMERCE_EVENT: Final = "commerce_event"

# Output record types (SPEC 4): the session records, and the enriched events beside them.
SESSION_START: Final = "session_start"
SESSION_END: Final = "session_end"
SESSION_RECORD_TYPES: Final = frozenset((SESSION_START, SESSION_END))
DEAD_LETTER: Final = "dead_letter"  # the record of a rejected message or event (SPEC 2)

# Why a session ended (SPEC 3).
END_TIMEOUT: Final = "timeout"
END_IDLE: Final = "idle"
END_TERMINATE: Final = "terminate"
END_FORCE_QUIT: Final = "force_quit"

# Why a message or event was rejected: a dead letter's `reason` (SPEC 2).
MALFORMED_JSON: Final = "malformed_json"
INVALID_EVENT: Final = "invalid_event"
TIMESTAMP_OUT_OF_RANGE: Final = "timestamp_out_of_range"
TOO_LARGE: Final = "too_large"
ATTRIBUTE_NOT_NUMERIC: Final = "attribute_not_numeric"

# Event times before this are refused (SPEC 2: timestamp_out_of_range).
MIN_TS_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z

# Session timeouts, the default's and an event's own `session_timeout_s` (SPEC 1, 3).
DEFAULT_SESSION_TIMEOUT_S: Final = 60.0
MIN_SESSION_TIMEOUT_S: Final = 1
MAX_SESSION_TIMEOUT_S: Final = 86_400


def wall_ms() -> int:
    """The wall clock in ms since the epoch (processing time, never event time)."""
    return time.time_ns() // 1_000_000
