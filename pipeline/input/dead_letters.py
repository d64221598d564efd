"""Dead letters (SPEC section 2): why a message or one event of it was rejected, as a record.

Parsing (`pipeline.input.events`) and the session rules' refusals (`attribute_rejection`) give
a `Rejection`; `dead_letter` turns one into the record written to the dead-letter output, with
the payload as sent, cut to `max_dead_letter_payload_bytes`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Final

import orjson

from pipeline.engine import Applied
from pipeline.vocabulary import ATTRIBUTE_NOT_NUMERIC, DEAD_LETTER, INVALID_EVENT

DEFAULT_MAX_DEAD_LETTER_PAYLOAD_BYTES: Final = 65_536
# A dead letter keeps at least this much of a bad payload, enough to recognise it.
MIN_DEAD_LETTER_PAYLOAD_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message, or one event of a batch (`index`), cannot be applied."""

    reason: str
    error: str
    index: int | None = None
    payload: bytes | None = None  # the event's own bytes inside a batch; None: the whole message


def encode_payload(payload: bytes) -> tuple[str, str]:
    """The payload as text with its encoding: UTF-8 when it decodes, else base64."""
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


def batch_event_as_sent(message: bytes, index: int) -> bytes:
    """The bytes of event `index` of a batch message as the SDK sent it (nothing inherited).

    The whole message when the event cannot be written back alone (nested too deep for JSON
    writers, for one).
    """
    try:
        return orjson.dumps(orjson.loads(message)["events"][index])
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, KeyError, IndexError, TypeError):
        return message


_ATTRIBUTE_REFUSALS: Final = {
    # engine verdict -> (reason code, error)
    Applied.ATTRIBUTE_NOT_NUMERIC.value: (ATTRIBUTE_NOT_NUMERIC, "which holds a non-number"),
    Applied.ATTRIBUTE_OUT_OF_RANGE.value: (INVALID_EVENT, "whose result would be out of range"),
}


def attribute_rejection(
    verdict: str, event: dict[str, Any], index: int | None, message: bytes
) -> Rejection:
    """The rejection of a session_attribute event the session rules refused (`verdict`)."""
    reason, why = _ATTRIBUTE_REFUSALS[verdict]
    error = f"increment of session attribute '{event['attribute']['key']}', {why}"
    payload = batch_event_as_sent(message, index) if index is not None else None
    return Rejection(reason, error, index, payload)


def dead_letter(
    rejection: Rejection,
    message: bytes,
    origin: dict[str, Any],
    max_payload_bytes: int = DEFAULT_MAX_DEAD_LETTER_PAYLOAD_BYTES,
) -> dict[str, Any]:
    """The dead-letter record of a rejection; `origin` is {"line": n} or topic/partition/offset.

    A payload over `max_payload_bytes` is cut there (on a character boundary for text), and the
    record says so, with the original size and SHA-256.
    """
    original = rejection.payload if rejection.payload is not None else message
    record = {
        "type": DEAD_LETTER,
        "reason": rejection.reason,
        "error": rejection.error,
        **origin,
        "index": rejection.index,
    }
    if len(original) <= max_payload_bytes:
        record["payload"], record["payload_encoding"] = encode_payload(original)
        return record
    try:
        original.decode("utf-8")
    except UnicodeDecodeError:
        payload = base64.b64encode(original[:max_payload_bytes]).decode("ascii")
        encoding = "base64"
    else:  # valid UTF-8: only the last, cut character can fail to decode
        payload = original[:max_payload_bytes].decode("utf-8", errors="ignore")
        encoding = "utf-8"
    record["payload"] = payload
    record["payload_encoding"] = encoding
    record["payload_truncated"] = True
    record["payload_bytes"] = len(original)
    record["payload_sha256"] = hashlib.sha256(original).hexdigest()
    return record
