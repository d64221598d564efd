"""Input parsing and validation (SPEC sections 1 and 2).

One message (a Kafka value, or a line offline) becomes a list of accepted events and a list of
rejections. A message is a single event or a batch `{"app_id", "device_id", "user_id"?,
"events": [...]}`; batch events inherit the batch's identity fields where they lack them and
keep their array order. Validation is the compiled schema of `schemas/` (see pipeline.schemas).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from pipeline.schemas import validator

MIN_TS_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
DEFAULT_MAX_EVENT_BYTES: Final = 1_048_576
DEFAULT_MAX_FUTURE_SKEW_S: Final = 86_400
DEFAULT_MAX_DEPTH: Final = 32
DEFAULT_MAX_DEAD_LETTER_PAYLOAD_BYTES: Final = 65_536
MAX_DEPTH_LIMIT: Final = 128  # orjson writes 254 levels; partner formats nest an event deeper
# Room for what the pipeline adds to an event (session fields, inherited batch fields, partner
# envelopes) and for a dead letter's fields around its capped payload.
RECORD_OVERHEAD_BYTES: Final = 65_536
# JSON text can grow when written back: a control character in a string becomes \u0000.
_ESCAPE_GROWTH: Final = 6

MALFORMED_JSON: Final = "malformed_json"
INVALID_EVENT: Final = "invalid_event"
TIMESTAMP_OUT_OF_RANGE: Final = "timestamp_out_of_range"
TOO_LARGE: Final = "too_large"
ATTRIBUTE_NOT_NUMERIC: Final = "attribute_not_numeric"

_INHERITED: Final = ("app_id", "device_id", "user_id")

_event_schema = validator("event")
_batch_schema = validator("batch")
_loads = orjson.loads
_NO_REJECTIONS: Final[list[Rejection]] = []  # shared: never appended to


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message, or one event of a batch (`index`), cannot be applied."""

    reason: str
    error: str
    index: int | None = None
    payload: bytes | None = None  # the event's own bytes inside a batch; None: the whole message


@dataclass(frozen=True, slots=True)
class Limits:
    """The input limits of SPEC section 2."""

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S
    max_depth: int = DEFAULT_MAX_DEPTH
    max_dead_letter_payload_bytes: int = DEFAULT_MAX_DEAD_LETTER_PAYLOAD_BYTES
    max_future_skew_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_future_skew_ms", int(self.max_future_skew_s * 1000))

    @property
    def max_record_bytes(self) -> int:
        """The largest record the pipeline writes: an accepted event with what it adds, or a
        dead letter with its capped payload (escaped). Topics and producers must hold it."""
        dead_letter = _ESCAPE_GROWTH * self.max_dead_letter_payload_bytes
        return max(self.max_event_bytes, dead_letter) + RECORD_OVERHEAD_BYTES


@dataclass(slots=True)
class ParsedMessage:
    """The valid events of one message, in order, and its rejections.

    `indices` holds each event's position in its batch; None when the message was one event.
    """

    events: list[dict[str, Any]]
    indices: list[int] | None
    rejections: list[Rejection]

    def index_of(self, event: dict[str, Any]) -> int | None:
        """The batch position of `event`, one of `events` (None: the message was one event)."""
        if self.indices is None:
            return None
        position = next(i for i, candidate in enumerate(self.events) if candidate is event)
        return self.indices[position]


def parse_message(message: bytes, now_ms: int, limits: Limits = Limits()) -> ParsedMessage:
    """Split a raw message (one event or a batch) into valid events and rejections.

    `now_ms` is the processing time, for the future-skew check.
    """
    if len(message) > limits.max_event_bytes:
        error = f"message is {len(message)} bytes, over max_event_bytes={limits.max_event_bytes}"
        return ParsedMessage([], None, [Rejection(TOO_LARGE, error)])
    try:
        document = _loads(message)
    except orjson.JSONDecodeError as exc:
        return ParsedMessage([], None, [Rejection(MALFORMED_JSON, f"not valid JSON: {exc}")])
    if type(document) is not dict:
        error = f"not a JSON object but {_json_kind(document)}"
        return ParsedMessage([], None, [Rejection(MALFORMED_JSON, error)])
    max_ts = now_ms + limits.max_future_skew_ms
    if "events" in document and "type" not in document:
        return _parse_batch(document, max_ts, message)
    rejection = _check_event(document, max_ts)
    if rejection is None:
        return ParsedMessage([document], None, _NO_REJECTIONS)
    return ParsedMessage([], None, [rejection])


def _parse_batch(batch: dict[str, Any], max_ts: int, message: bytes) -> ParsedMessage:
    if not _batch_schema.is_valid(batch):
        error = _batch_schema.explain(batch, root="batch")
        return ParsedMessage([], None, [Rejection(INVALID_EVENT, error)])
    inherited = [(key, batch[key]) for key in _INHERITED if key in batch]
    events: list[dict[str, Any]] = []
    indices: list[int] = []
    rejections: list[Rejection] = []
    for index, event in enumerate(batch["events"]):
        if type(event) is not dict:
            error = f"batch event is not a JSON object but {_json_kind(event)}"
            rejections.append(Rejection(INVALID_EVENT, error, index, orjson.dumps(event)))
            continue
        for key, value in inherited:
            if key not in event:
                event[key] = value
        rejection = _check_event(event, max_ts)
        if rejection is None:
            events.append(event)
            indices.append(index)
            continue
        payload = batch_event_as_sent(message, index)  # the event without what it inherited
        rejections.append(Rejection(rejection.reason, rejection.error, index, payload))
    return ParsedMessage(events, indices, rejections)


def _check_event(event: dict[str, Any], max_ts: int) -> Rejection | None:
    if not _event_schema.is_valid(event):
        return Rejection(INVALID_EVENT, _event_schema.explain(event))
    ts = event["ts"]
    if type(ts) is not int:  # the schema's "integer" admits 1.0; events carry exact ints
        ts = event["ts"] = int(ts)
    if ts < MIN_TS_MS:
        return Rejection(TIMESTAMP_OUT_OF_RANGE, f"ts {ts} is before 2000-01-01T00:00:00Z")
    if ts > max_ts:
        return Rejection(
            TIMESTAMP_OUT_OF_RANGE, f"ts {ts} is more than max_future_skew_s ahead of now"
        )
    return None


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", int: "a number", float: "a number"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return kinds.get(type(value), type(value).__name__)


def encode_payload(payload: bytes) -> tuple[str, str]:
    """The payload as text with its encoding: UTF-8 when it decodes, else base64."""
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


def batch_event_as_sent(message: bytes, index: int) -> bytes:
    """The bytes of event `index` of a batch message as the SDK sent it (nothing inherited)."""
    try:
        return orjson.dumps(orjson.loads(message)["events"][index])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return message


_ATTRIBUTE_REFUSALS: Final = {
    # engine verdict -> (reason code, error)
    "attribute_not_numeric": (ATTRIBUTE_NOT_NUMERIC, "which holds a non-number"),
    "attribute_out_of_range": (INVALID_EVENT, "whose result would be out of range"),
}


def attribute_rejection(
    verdict: str, event: dict[str, Any], index: int | None, message: bytes
) -> Rejection:
    """The rejection of a session_attribute event the session rules refused (`verdict`)."""
    reason, why = _ATTRIBUTE_REFUSALS[verdict]
    error = f"increment of session attribute '{event['attribute']['key']}', {why}"
    payload = batch_event_as_sent(message, index) if index is not None else None
    return Rejection(reason, error, index, payload)


def dead_letter(rejection: Rejection, message: bytes, origin: dict[str, Any]) -> dict[str, Any]:
    """The dead-letter record of a rejection; `origin` is {"line": n} or topic/partition/offset."""
    payload, encoding = encode_payload(
        rejection.payload if rejection.payload is not None else message
    )
    return {
        "type": "dead_letter",
        "reason": rejection.reason,
        "error": rejection.error,
        **origin,
        "index": rejection.index,
        "payload": payload,
        "payload_encoding": encoding,
    }
