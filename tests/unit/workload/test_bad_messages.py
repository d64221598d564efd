"""The bad messages of the SDK noise: every kind, at about the rate asked, none when not asked."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from pipeline.workload.generator import WorkloadSpec, generate_events, generate_messages
from tests.unit.workload.checks import (
    Event,
    first_sendings,
    is_bad,
    message_problems,
    session_numbers,
    spec,
    valid_events,
)


@pytest.mark.parametrize("batch_size", [1, 20])
def test_bad_messages_come_in_every_kind_at_about_the_rate(batch_size: int) -> None:
    workload = spec(devices=500, bad_rate=0.02, batch_size=batch_size)
    kinds = Counter(
        kind for message in generate_messages(workload) for kind in message_problems(message)
    )
    valid = len({event["event_id"] for event in generate_events(workload)})
    expected = {
        "garbage_bytes",
        "truncated_json",
        "json_array",
        "batch_events_not_array",
        "missing_field",
        "ts_as_string",
        "unknown_type",
        "increment_not_numeric",
        "ts_before_2000",
    }
    assert set(kinds) == expected
    # attribute_not_numeric is schema-valid: see the next test
    assert 0.015 < (kinds.total() + attribute_not_numeric_count(workload)) / valid < 0.025


def attribute_not_numeric_count(workload: WorkloadSpec) -> int:
    return sum(
        1
        for message in generate_messages(workload)
        if b'"key":"plan","value":1}' in message and b'"op":"increment"' in message
    )


def test_increment_of_a_text_attribute_follows_a_text_set_in_the_same_session() -> None:
    """The schema-valid bad event: the engine rejects it as attribute_not_numeric."""
    for batch_size in (1, 20):
        workload = spec(devices=300, bad_rate=0.5, batch_size=batch_size)
        by_device: dict[str, list[Event]] = defaultdict(list)
        for message in generate_messages(workload):
            for event in valid_events(message):
                by_device[event["device_id"]].append(event)
        found = 0
        for device_events in by_device.values():
            firsts = first_sendings(e for e in device_events if not is_bad(e))
            if not firsts:
                continue
            (events,) = firsts.values()
            session_of = dict(
                zip((e["event_id"] for e in events), session_numbers(events), strict=True)
            )
            text_plans: set[int] = set()  # sessions whose "plan" holds text
            latest: Event | None = None
            seen: set[str] = set()
            for event in device_events:
                if is_bad(event):
                    assert event["attribute"] == {"op": "increment", "key": "plan", "value": 1}
                    assert latest is not None and session_of[latest["event_id"]] in text_plans
                    assert latest["type"] != "app_terminate"
                    assert event["ts"] == latest["ts"]
                    found += 1
                elif event["event_id"] not in seen:
                    seen.add(event["event_id"])
                    latest = event
                    change = event.get("attribute", {})
                    if change.get("key") == "plan" and isinstance(change["value"], str):
                        text_plans.add(session_of[event["event_id"]])
        assert found >= 5


def test_default_workload_has_bad_messages() -> None:
    kinds = Counter(
        kind for message in generate_messages(WorkloadSpec()) for kind in message_problems(message)
    )
    assert kinds.total() >= 20
    assert len(kinds) >= 5


def test_no_bad_messages_when_rate_is_zero() -> None:
    messages = list(generate_messages(spec(bad_rate=0.0, batch_size=20)))
    assert not any(message_problems(message) for message in messages)
