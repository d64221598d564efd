"""SPEC section 2: the dead-letter record of a rejection, its payload and its cap."""

from __future__ import annotations

import base64
import hashlib

from pipeline.engine import Applied
from pipeline.input.dead_letters import (
    Rejection,
    attribute_rejection,
    dead_letter,
    encode_payload,
)
from pipeline.input.schemas import validator


def test_dead_letter_keeps_utf8_payload_and_origin() -> None:
    record = dead_letter(Rejection("malformed_json", "bad"), b"{oops", {"line": 3})
    assert record["payload"] == "{oops"
    assert record["payload_encoding"] == "utf-8"
    assert record["line"] == 3
    assert record["index"] is None
    assert validator("dead_letter").is_valid(record), validator("dead_letter").explain(record)


def test_dead_letter_base64_for_non_utf8_payload() -> None:
    origin = {"topic": "events.raw", "partition": 0, "offset": 9}
    record = dead_letter(Rejection("malformed_json", "bad"), b"\xff\x00", origin)
    assert record["payload_encoding"] == "base64"
    assert base64.b64decode(record["payload"]) == b"\xff\x00"
    assert validator("dead_letter").is_valid(record), validator("dead_letter").explain(record)


def test_encode_payload_round_trips() -> None:
    assert encode_payload("é".encode()) == ("é", "utf-8")


def test_dead_letter_payload_is_capped_on_a_character_boundary() -> None:
    original = ("é" * 40_000).encode()  # 80,000 bytes of two-byte characters
    record = dead_letter(Rejection("too_large", "big"), original, {"line": 1}, 65_535)
    assert record["payload"] == "é" * 32_767  # 65,534 bytes: the cut character is left out
    assert record["payload_encoding"] == "utf-8"
    assert record["payload_truncated"] is True
    assert record["payload_bytes"] == 80_000
    assert record["payload_sha256"] == hashlib.sha256(original).hexdigest()
    assert validator("dead_letter").is_valid(record), validator("dead_letter").explain(record)


def test_dead_letter_payload_cap_defaults_to_64_kib() -> None:
    exact = b"x" * 65_536
    record = dead_letter(Rejection("too_large", "big"), exact, {"line": 1})
    assert record["payload"] == exact.decode()
    assert "payload_truncated" not in record
    record = dead_letter(Rejection("too_large", "big"), exact + b"x", {"line": 1})
    assert record["payload"] == exact.decode()
    assert record["payload_bytes"] == 65_537


def test_binary_dead_letter_payload_is_capped_before_base64() -> None:
    original = b"\xff" * 100_000
    record = dead_letter(Rejection("malformed_json", "bad"), original, {"line": 1}, 1_000)
    assert record["payload_encoding"] == "base64"
    assert base64.b64decode(record["payload"]) == original[:1_000]
    assert record["payload_bytes"] == 100_000
    assert record["payload_sha256"] == hashlib.sha256(original).hexdigest()
    assert validator("dead_letter").is_valid(record), validator("dead_letter").explain(record)


def test_a_truncated_dead_letter_must_say_so_in_full() -> None:
    record = dead_letter(Rejection("too_large", "big"), b"x" * 2_000, {"line": 1}, 1_000)
    del record["payload_sha256"]
    assert not validator("dead_letter").is_valid(record)


def test_refused_increments_are_rejected_with_their_reason_and_event_as_sent() -> None:
    message = b'{"app_id": "a1", "device_id": "d1", "events": [{"x": 1}, {"attribute": {}}]}'
    event = {"attribute": {"key": "cart", "op": "increment", "value": 1}}
    not_numeric = attribute_rejection(Applied.ATTRIBUTE_NOT_NUMERIC.value, event, 1, message)
    assert (not_numeric.reason, not_numeric.index) == ("attribute_not_numeric", 1)
    assert not_numeric.payload == b'{"attribute":{}}'
    out_of_range = attribute_rejection(Applied.ATTRIBUTE_OUT_OF_RANGE.value, event, None, message)
    assert (out_of_range.reason, out_of_range.payload) == ("invalid_event", None)
    assert "'cart'" in out_of_range.error
