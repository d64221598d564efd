"""SPEC sections 1 and 2: parsing, batches, and every reason code."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.input.events import Limits, parse_message

NOW = 1_790_000_000_000


def event(**fields: Any) -> dict[str, Any]:
    base = {"event_id": "e1", "app_id": "a1", "device_id": "d1", "type": "screen_view", "ts": NOW}
    base.update(fields)
    return base


def reasons(message: bytes, limits: Limits | None = None) -> list[str]:
    return [r.reason for r in parse_message(message, NOW, limits or Limits()).rejections]


def test_valid_event_is_accepted_with_unknown_fields_kept() -> None:
    parsed = parse_message(orjson.dumps(event(sdk="android", name="home")), NOW)
    assert parsed.rejections == []
    assert parsed.events == [event(sdk="android", name="home")]
    assert parsed.indices is None


@pytest.mark.parametrize(
    "message",
    [b"{", b"", b"   ", b"\xff\xfe garbage", b"[1, 2]", b'"text"', b"42", b"null", b"true"],
)
def test_malformed_json(message: bytes) -> None:
    assert reasons(message) == ["malformed_json"]


@pytest.mark.parametrize(
    "fields",
    [
        {"event_id": ""},
        {"event_id": "x" * 129},
        {"app_id": 7},
        {"device_id": "d" * 257},
        {"type": "app_crash"},
        {"ts": "1790000000000"},
        {"ts": 1.5},
        {"ts": True},
        {"user_id": 12},
        {"name": ["x"]},
        {"attributes": "x"},
        {"session_timeout_s": 0},
        {"session_timeout_s": 86401},
        {"type": "session_attribute"},
        {"type": "session_attribute", "attribute": {"op": "multiply", "key": "k", "value": 1}},
        {"type": "session_attribute", "attribute": {"op": "increment", "key": "k", "value": "1"}},
        {"type": "session_attribute", "attribute": {"op": "set", "key": "k", "value": [1]}},
        {"type": "session_attribute", "attribute": {"op": "set", "key": "k"}},
    ],
)
def test_invalid_event(fields: dict[str, Any]) -> None:
    assert reasons(orjson.dumps(event(**fields))) == ["invalid_event"]


@pytest.mark.parametrize("missing", ["event_id", "app_id", "device_id", "type", "ts"])
def test_invalid_event_when_required_field_missing(missing: str) -> None:
    fields = event()
    del fields[missing]
    rejection = parse_message(orjson.dumps(fields), NOW).rejections[0]
    assert rejection.reason == "invalid_event"
    assert missing in rejection.error


def test_integral_float_ts_is_accepted_as_an_integer() -> None:
    parsed = parse_message(orjson.dumps(event(ts=float(NOW))), NOW)
    assert parsed.events[0]["ts"] == NOW
    assert type(parsed.events[0]["ts"]) is int


@pytest.mark.parametrize(
    ("ts", "accepted"),
    [
        (946_684_800_000 - 1, False),
        (946_684_800_000, True),
        (NOW + 86_400_000, True),
        (NOW + 86_400_001, False),
    ],
)
def test_timestamp_out_of_range(ts: int, accepted: bool) -> None:
    assert reasons(orjson.dumps(event(ts=ts))) == ([] if accepted else ["timestamp_out_of_range"])


def test_future_skew_is_configurable() -> None:
    limits = Limits(max_future_skew_s=10)
    assert reasons(orjson.dumps(event(ts=NOW + 10_001)), limits) == ["timestamp_out_of_range"]


def test_too_large() -> None:
    message = orjson.dumps(event(name="x" * 2000))
    assert reasons(message, Limits(max_event_bytes=1000)) == ["too_large"]
    assert reasons(message, Limits(max_event_bytes=len(message))) == []


def test_too_large_by_default_is_over_one_mebibyte() -> None:
    assert reasons(orjson.dumps(event(name="x" * 1_048_576))) == ["too_large"]


def test_batch_events_inherit_identity_and_keep_order() -> None:
    batch = {
        "app_id": "a1",
        "device_id": "d1",
        "user_id": "u1",
        "events": [
            {"event_id": "1", "type": "app_launch", "ts": NOW},
            {"event_id": "2", "type": "screen_view", "ts": NOW + 1, "user_id": None},
            {"event_id": "3", "type": "screen_view", "ts": NOW + 2, "device_id": "d2"},
        ],
    }
    parsed = parse_message(orjson.dumps(batch), NOW)
    assert [e["event_id"] for e in parsed.events] == ["1", "2", "3"]
    assert parsed.indices == [0, 1, 2]
    assert parsed.events[0]["user_id"] == "u1"
    assert parsed.events[1]["user_id"] is None
    assert parsed.events[2]["device_id"] == "d2"
    assert parsed.events[0]["app_id"] == "a1"


def test_bad_event_in_batch_is_rejected_alone_with_its_index() -> None:
    batch = {
        "app_id": "a1",
        "device_id": "d1",
        "events": [
            {"event_id": "1", "type": "app_launch", "ts": NOW},
            {"event_id": "2", "type": "nope", "ts": NOW},
            "not an object",
            {"event_id": "4", "type": "screen_view", "ts": 5},
            {"event_id": "5", "type": "screen_view", "ts": NOW},
        ],
    }
    parsed = parse_message(orjson.dumps(batch), NOW)
    assert [e["event_id"] for e in parsed.events] == ["1", "5"]
    assert parsed.indices == [0, 4]
    assert [(r.reason, r.index) for r in parsed.rejections] == [
        ("invalid_event", 1),
        ("invalid_event", 2),
        ("timestamp_out_of_range", 3),
    ]
    # The payload is the event as it was sent, without the inherited fields.
    assert orjson.loads(parsed.rejections[0].payload or b"") == {
        "event_id": "2",
        "type": "nope",
        "ts": NOW,
    }


@pytest.mark.parametrize(
    "batch",
    [{"events": "x"}, {"events": [], "app_id": 3}, {"events": {"a": 1}}],
)
def test_batch_without_an_events_array_is_invalid_as_a_whole(batch: dict[str, Any]) -> None:
    parsed = parse_message(orjson.dumps(batch), NOW)
    assert [(r.reason, r.index) for r in parsed.rejections] == [("invalid_event", None)]
    assert parsed.events == []


def test_batch_event_missing_identity_without_batch_identity_is_invalid() -> None:
    batch = {"events": [{"event_id": "1", "type": "app_launch", "ts": NOW}]}
    assert reasons(orjson.dumps(batch)) == ["invalid_event"]


def nested_message(depth: int, container: str = "object") -> bytes:
    """An event whose `attributes` make the whole event `depth` levels deep (event = level 1).

    Built as text: JSON writers refuse to write past 254 levels.
    """
    head = orjson.dumps(event())[:-1] + b',"attributes":'
    inner = depth - 1  # the attributes object is level 2
    if container == "object":
        return head + b'{"x":' * (inner - 1) + b"{}" + b"}" * (inner - 1) + b"}"
    return head + b"{" + b'"x":' + b"[" * (inner - 1) + b"]" * (inner - 1) + b"}}"


def test_spec_nesting_example_is_four_levels_deep() -> None:
    message = orjson.dumps(event(attributes={"cart": [{"sku": "a"}]}))
    assert reasons(message, Limits(max_depth=4)) == []
    assert reasons(message, Limits(max_depth=3)) == ["invalid_event"]


@pytest.mark.parametrize("container", ["object", "array"])
def test_nesting_up_to_max_depth_is_accepted_and_one_more_is_invalid(container: str) -> None:
    assert reasons(nested_message(32, container)) == []
    assert reasons(nested_message(33, container)) == ["invalid_event"]
    parsed = parse_message(nested_message(33, container), NOW)
    assert "max_depth=32" in parsed.rejections[0].error


@pytest.mark.parametrize("depth", [255, 300, 1000])
def test_events_deeper_than_json_writers_go_are_invalid_not_a_crash(depth: int) -> None:
    assert reasons(nested_message(depth)) == ["invalid_event"]


def test_every_accepted_event_can_be_written_back() -> None:
    parsed = parse_message(nested_message(32), NOW)
    assert orjson.loads(orjson.dumps(parsed.events[0])) == parsed.events[0]


def test_a_deep_event_in_a_batch_is_dead_lettered_alone_with_the_batch_as_payload() -> None:
    deep = nested_message(400)
    message = (
        b'{"app_id":"a1","device_id":"d1","events":['
        + deep
        + b","
        + orjson.dumps(event(event_id="e2"))
        + b"]}"
    )
    parsed = parse_message(message, NOW)
    assert [e["event_id"] for e in parsed.events] == ["e2"]
    assert [(r.reason, r.index) for r in parsed.rejections] == [("invalid_event", 0)]
    # The event alone cannot be written back: the payload is the whole message.
    assert parsed.rejections[0].payload == message


def test_max_depth_is_configurable() -> None:
    assert reasons(nested_message(5), Limits(max_depth=5)) == []
    assert reasons(nested_message(6), Limits(max_depth=5)) == ["invalid_event"]


def test_an_event_that_would_outgrow_max_event_bytes_when_written_is_too_large() -> None:
    # "9e15" is written back as 9000000000000000.0: 4.5 times longer.
    numbers = b",".join([b"9e15"] * 2_000)
    message = orjson.dumps(event())[:-1] + b',"n":[' + numbers + b"]}"
    limits = Limits(max_event_bytes=len(message) + 1)
    parsed = parse_message(message, NOW, limits)
    assert [r.reason for r in parsed.rejections] == ["too_large"]
    assert "written back" in parsed.rejections[0].error
    assert parsed.events == []


@pytest.mark.parametrize("others", [[], ["text", 7, None], [{"event_id": "e2"}]])
def test_batch_event_one_level_past_max_depth_is_invalid_whatever_its_neighbours(
    others: list[Any],
) -> None:
    inside = b"," + b",".join(orjson.dumps(o) for o in others) if others else b""
    for depth, accepted in ((32, True), (33, False)):
        message = b'{"app_id":"a1","device_id":"d1","events":[' + nested_message(depth) + inside
        message += b"]}"
        parsed = parse_message(message, NOW)
        deep_rejected = any(r.index == 0 for r in parsed.rejections)
        assert deep_rejected is not accepted


@pytest.mark.parametrize("field", [b'"name":', b'"event_id":', b'"attributes":', b'"ts":'])
def test_a_deep_value_where_the_schema_wants_another_type_is_invalid_not_a_crash(
    field: bytes,
) -> None:
    # The schema validator's own report gives up past 255 levels.
    message = orjson.dumps(event())[:-1] + b"," + field + b"[" * 300 + b"]" * 300 + b"}"
    parsed = parse_message(message, NOW)
    assert [r.reason for r in parsed.rejections] == ["invalid_event"]
    assert "max_depth=32" in parsed.rejections[0].error


def test_a_batch_whose_events_hold_a_deep_value_is_invalid_as_a_whole() -> None:
    message = b'{"app_id":"a1","device_id":"d1","events":{"x":' + b"[" * 300 + b"]" * 300 + b"}}"
    assert reasons(message) == ["invalid_event"]
