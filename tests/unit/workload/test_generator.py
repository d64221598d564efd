"""The synthetic workload generator: determinism, messages, batches and their arrival order."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.workload.generator import (
    WorkloadSpec,
    generate_events,
    generate_keyed_messages,
    generate_messages,
    write_jsonl,
)
from tests.unit.workload.checks import (
    default_events,
    event_problem,
    first_sendings,
    is_bad,
    message_problems,
    spec,
    valid_events,
)


def test_same_spec_gives_identical_bytes() -> None:
    for batch_size in (1, 20):
        workload = spec(batch_size=batch_size, bad_rate=0.01)
        assert list(generate_messages(workload)) == list(generate_messages(workload))


def test_different_seed_gives_different_messages() -> None:
    assert list(generate_messages(spec(seed=1))) != list(generate_messages(spec(seed=2)))


def test_output_starts_at_start_ms() -> None:
    events = list(generate_events(spec(start_ms=1_800_000_000_000)))
    assert min(event["ts"] for event in events) >= 1_800_000_000_000
    assert min(event["ts"] for event in events) < 1_800_000_000_000 + 86_400_000


def test_valid_events_do_not_depend_on_noise_or_batching() -> None:
    quiet = first_sendings(generate_events(spec(duplicate_rate=0.0, bad_rate=0.0)))
    for noisy in (spec(duplicate_rate=0.1, bad_rate=0.05), spec(batch_size=20)):
        assert first_sendings(generate_events(noisy)) == quiet


def test_messages_hold_exactly_the_events() -> None:
    for batch_size in (1, 20):
        workload = spec(batch_size=batch_size, bad_rate=0.02)
        expanded = [
            event
            for message in generate_messages(workload)
            for event in valid_events(message)
            if not is_bad(event)  # an increment of a text attribute: valid until applied
        ]
        assert expanded == list(generate_events(workload))


def test_keys_are_the_device_id_except_for_garbage() -> None:
    for key, message in generate_keyed_messages(spec(bad_rate=0.05, batch_size=20)):
        if message_problems(message) == ["garbage_bytes"]:
            assert key is None
            continue
        assert key is not None
        if message_problems(message) != ["truncated_json"]:
            assert key in message  # as device_id, or in the event_id of an event missing it


def test_batches_hold_the_events_of_one_device_and_carry_its_ids() -> None:
    messages = list(generate_messages(spec(batch_size=20, bad_rate=0.0)))
    batches = [orjson.loads(message) for message in messages]
    assert all("events" in batch for batch in batches)
    seen: set[str] = set()
    sizes, hoisted_users = [], 0
    for batch in batches:
        assert batch["app_id"].startswith("app-")
        assert batch["device_id"].startswith("dev-")
        hoisted_users += "user_id" in batch
        fresh = 0
        for event in batch["events"]:
            assert "app_id" not in event and "device_id" not in event
            assert event["event_id"].startswith(batch["device_id"] + "-")
            fresh += event["event_id"] not in seen
            seen.add(event["event_id"])
        assert fresh <= 20
        sizes.append(len(batch["events"]))
    assert max(sizes) >= 20
    assert sum(sizes) / len(sizes) > 2
    assert hoisted_users > 0


def test_batches_end_at_background_and_terminate() -> None:
    messages = generate_messages(spec(batch_size=1000, duplicate_rate=0.0, bad_rate=0.0))
    for message in messages:
        types = [event["type"] for event in orjson.loads(message)["events"]]
        assert "app_background" not in types[:-1]
        assert "app_terminate" not in types[:-1]
        assert "app_launch" not in types[1:]


def test_batch_size_one_gives_plain_events() -> None:
    for message in generate_messages(spec(bad_rate=0.0)):
        event = orjson.loads(message)
        assert "events" not in event
        assert event_problem(event) is None


def test_single_messages_arrive_roughly_in_ts_order() -> None:
    events = list(generate_events(spec(devices=500)))
    seen: set[str] = set()
    latest = 0
    for event in events:
        if event["event_id"] in seen:
            continue  # a retry repeats an older ts
        seen.add(event["event_id"])
        assert event["ts"] > latest - 2_000
        latest = max(latest, event["ts"])


def test_devices_interleave_in_arrival_order() -> None:
    device_ids = [event["device_id"] for event in default_events()]
    switches = sum(1 for a, b in itertools.pairwise(device_ids) if a != b)
    assert switches > len(device_ids) / 3


def test_write_jsonl_writes_one_message_per_line(tmp_path: Path) -> None:
    workload = spec(bad_rate=0.05, batch_size=5)
    path = tmp_path / "events.jsonl"
    lines = write_jsonl(workload, path)
    messages = list(generate_messages(workload))
    assert lines == len(messages)
    assert path.read_bytes().split(b"\n") == [*messages, b""]
    assert any(message_problems(message) == ["garbage_bytes"] for message in messages)


def test_empty_population_gives_nothing() -> None:
    assert list(generate_messages(spec(devices=0))) == []


@pytest.mark.parametrize(
    "changes",
    [{"devices": -1}, {"apps": 0}, {"batch_size": 0}, {"duplicate_rate": 1.5}, {"bad_rate": -0.1}],
)
def test_nonsense_specs_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        WorkloadSpec(**changes)
