"""What the device simulation hands to the renderers: uploads, each a list of entries.

An entry is (kind, extra, body): a valid event or its retry (extra: the user_id to carry, or
ABSENT), a bad event (extra: the required field it lacks, or None) or a raw bad message (extra:
its Kafka key, body: its bytes). Bodies hold no app_id, device_id or user_id: the renderers add
them, inline or inherited from a batch.
"""

from __future__ import annotations

from typing import Any, Final

# Entry kinds; the valid ones first, so `kind <= RETRY` means "an event to send as is".
VALID: Final = 0
RETRY: Final = 1
BAD_EVENT: Final = 2
BAD_RAW: Final = 3


class Absent:
    """The user_id of an event that omits the field (as opposed to sending null)."""

    __slots__ = ()


ABSENT: Final = Absent()

Entry = tuple[int, Any, Any]
Upload = tuple[int, list[Entry]]  # (arrival ms, entries)
