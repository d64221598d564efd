"""Bytes to events (SPEC sections 1 and 2): parsing against `schemas/`, and dead letters."""

from pipeline.input.dead_letters import (
    MIN_DEAD_LETTER_PAYLOAD_BYTES,
    Rejection,
    attribute_rejection,
    batch_event_as_sent,
    dead_letter,
    encode_payload,
)
from pipeline.input.events import (
    MAX_DEPTH_LIMIT,
    NOT_DECODED,
    Limits,
    ParsedMessage,
    parse_message,
)
from pipeline.vocabulary import TOO_LARGE

__all__ = [
    "MAX_DEPTH_LIMIT",
    "MIN_DEAD_LETTER_PAYLOAD_BYTES",
    "NOT_DECODED",
    "TOO_LARGE",
    "Limits",
    "ParsedMessage",
    "Rejection",
    "attribute_rejection",
    "batch_event_as_sent",
    "dead_letter",
    "encode_payload",
    "parse_message",
]
