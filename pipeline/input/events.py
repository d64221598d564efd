"""Input parsing and validation (SPEC sections 1 and 2): bytes to events, and the input limits.

One message (a Kafka value, or a line offline) becomes a list of accepted events and a list of
rejections (written as dead letters by `pipeline.input.dead_letters`). A message is a single
event or a batch `{"app_id", "device_id", "user_id"?, "events": [...]}`; batch events inherit
the batch's identity fields where they lack them and keep their array order. Validation is the
compiled schema of `schemas/` (see `pipeline.input.schemas`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from pipeline.input.dead_letters import (
    DEFAULT_MAX_DEAD_LETTER_PAYLOAD_BYTES,
    Rejection,
    batch_event_as_sent,
)
from pipeline.input.schemas import load_schema, validator
from pipeline.vocabulary import (
    INVALID_EVENT,
    MALFORMED_JSON,
    MIN_TS_MS,
    TIMESTAMP_OUT_OF_RANGE,
    TOO_LARGE,
)

DEFAULT_MAX_EVENT_BYTES: Final = 1_048_576
DEFAULT_MAX_FUTURE_SKEW_S: Final = 86_400
DEFAULT_MAX_DEPTH: Final = 32
MAX_DEPTH_LIMIT: Final = 128  # orjson writes 254 levels; partner formats nest an event deeper
# Room for what the pipeline adds to an event (session fields, inherited batch fields, partner
# envelopes) and for a dead letter's fields around its capped payload.
RECORD_OVERHEAD_BYTES: Final = 65_536
# JSON text can grow when written back: a control character in a string becomes \u0000.
_ESCAPE_GROWTH: Final = 6
# How much an accepted event can grow when written back (a number token such as 9e15 becomes
# 9000000000000000.0): messages this much under max_event_bytes cannot outgrow it.
_WRITTEN_GROWTH: Final = 5

_INHERITED: Final = ("app_id", "device_id", "user_id")

_event_schema = validator("event")
_SCHEMA_FIELDS: Final = frozenset(load_schema("event")["properties"])
_batch_schema = validator("batch")
_loads = orjson.loads
_NO_REJECTIONS: Final[list[Rejection]] = []  # shared: never appended to
NOT_DECODED: Final[Any] = object()  # parse_message's `document` when the caller has none


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


def parse_message(
    message: bytes, now_ms: int, limits: Limits = Limits(), document: Any = NOT_DECODED
) -> ParsedMessage:
    """Split a raw message (one event or a batch) into valid events and rejections.

    `now_ms` is the processing time, for the future-skew check. `document`: the message as
    orjson decoded it, for a caller that decodes first to see whose message it is (offline
    `--jobs`), and only for a message within `max_event_bytes`: it is not decoded twice.
    """
    if document is NOT_DECODED:
        if len(message) > limits.max_event_bytes:
            size = len(message)
            error = f"message is {size} bytes, over max_event_bytes={limits.max_event_bytes}"
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
        parsed = _parse_batch(document, max_ts, message, limits.max_depth)
    else:
        rejection = _check_event(document, max_ts, limits.max_depth)
        if rejection is not None:
            return ParsedMessage([], None, [rejection])
        parsed = ParsedMessage([document], None, _NO_REJECTIONS)
    if len(message) * _WRITTEN_GROWTH > limits.max_event_bytes:
        _refuse_unwritable(parsed, message, limits.max_event_bytes)
    return parsed


def _parse_batch(
    batch: dict[str, Any], max_ts: int, message: bytes, max_depth: int
) -> ParsedMessage:
    if not _batch_schema.is_valid(batch):
        error = _batch_schema.explain(batch, root="batch")
        return ParsedMessage([], None, [Rejection(INVALID_EVENT, error)])
    # An event is no deeper than the containers it holds: the message's brackets past the
    # batch, its array and each event's own brace bound that, so most batches need no walk.
    brackets = message.count(b"{") + message.count(b"[")
    inner = brackets - 2 - list(map(type, batch["events"])).count(dict)
    if inner + 1 <= max_depth:
        max_depth = 0
    inherited = [(key, batch[key]) for key in _INHERITED if key in batch]
    events: list[dict[str, Any]] = []
    indices: list[int] = []
    rejections: list[Rejection] = []
    for index, event in enumerate(batch["events"]):
        if type(event) is not dict:
            error = f"batch event is not a JSON object but {_json_kind(event)}"
            payload = batch_event_as_sent(message, index)
            rejections.append(Rejection(INVALID_EVENT, error, index, payload))
            continue
        for key, value in inherited:
            if key not in event:
                event[key] = value
        rejection = _check_event(event, max_ts, max_depth)
        if rejection is None:
            events.append(event)
            indices.append(index)
            continue
        payload = batch_event_as_sent(message, index)  # the event without what it inherited
        rejections.append(Rejection(rejection.reason, rejection.error, index, payload))
    return ParsedMessage(events, indices, rejections)


def _refuse_unwritable(parsed: ParsedMessage, message: bytes, max_event_bytes: int) -> None:
    # Written back, JSON can grow ("1e9" is 1000000000.0): an event must still fit its output.
    kept = []
    kept_indices = []
    rejections = list(parsed.rejections)
    for position, event in enumerate(parsed.events):
        size = len(orjson.dumps(event))
        index = parsed.indices[position] if parsed.indices is not None else None
        if size <= max_event_bytes:
            kept.append(event)
            kept_indices.append(index)
            continue
        error = f"event is {size} bytes written back, over max_event_bytes={max_event_bytes}"
        payload = batch_event_as_sent(message, index) if index is not None else None
        rejections.append(Rejection(TOO_LARGE, error, index, payload))
    if len(kept) == len(parsed.events):
        return
    rejections.sort(key=lambda rejection: rejection.index or 0)
    parsed.events = kept
    parsed.indices = None if parsed.indices is None else [i for i in kept_indices if i is not None]
    parsed.rejections = rejections


def _check_event(event: dict[str, Any], max_ts: int, max_depth: int = 0) -> Rejection | None:
    """Why `event` cannot be applied, or None. `max_depth` 0: known not to nest too deep."""
    if not _event_schema.is_valid(event):
        if max_depth and _deeper_than(event.values(), 1, max_depth):
            return _too_deep(max_depth)  # (and the schema's own report may not go that deep)
        return Rejection(INVALID_EVENT, _event_schema.explain(event))
    if max_depth:  # more than max_depth levels deep (the event is level 1)?
        if max_depth >= 2 and _SCHEMA_FIELDS.issuperset(event):
            # The schema keeps every field scalar but `attributes` and `attribute` (two levels).
            attributes = event.get("attributes")
            if attributes is not None and _deeper_than(attributes.values(), 2, max_depth):
                return _too_deep(max_depth)
        elif _deeper_than(event.values(), 1, max_depth):  # unknown fields: walk them all
            return _too_deep(max_depth)
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


def _too_deep(max_depth: int) -> Rejection:
    return Rejection(INVALID_EVENT, f"event nests deeper than max_depth={max_depth} levels")


def _deeper_than(values: Iterable[Any], level: int, max_depth: int) -> bool:
    """Whether any of `values`, held by a container at `level`, nests past `max_depth` levels.

    Recursion stops at `max_depth`, so it stays far from Python's recursion limit.
    """
    for value in values:
        kind = type(value)
        if kind is dict:
            if level >= max_depth or _deeper_than(value.values(), level + 1, max_depth):
                return True
        elif kind is list and (level >= max_depth or _deeper_than(value, level + 1, max_depth)):
            return True
    return False


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", int: "a number", float: "a number"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return kinds.get(type(value), type(value).__name__)
