"""The synthetic workload generator: determinism, realism and the noise it promises."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.input.schemas import validator
from pipeline.workload.generator import (
    WorkloadSpec,
    generate_events,
    generate_keyed_messages,
    generate_messages,
    write_jsonl,
)

DEFAULT_TIMEOUT_MS = 60_000
IDLE_TIMEOUT_MS = 1_800_000
MIN_TS_MS = 946_684_800_000
INHERITED = ("app_id", "device_id", "user_id")

Event = dict[str, Any]


def spec(**changes: Any) -> WorkloadSpec:
    """A small workload; each test states only what differs."""
    return dataclasses.replace(WorkloadSpec(devices=200, events_per_device=30), **changes)


@cache
def default_events() -> tuple[Event, ...]:
    """The 1000-device default workload, generated once for the tests that only read it."""
    return tuple(generate_events(WorkloadSpec()))


def first_sendings(events: Iterable[Event]) -> dict[str, list[Event]]:
    """Each device's events without retries, in arrival order."""
    seen: set[str] = set()
    by_device: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            by_device[event["device_id"]].append(event)
    return by_device


def timeout_ms(event: Event) -> int:
    return int(event.get("session_timeout_s", DEFAULT_TIMEOUT_MS / 1000) * 1000)


def session_numbers(events: list[Event]) -> list[int]:
    """The session number of each event of one device by SPEC section 3 (no duplicates given)."""
    numbers: list[int] = []
    number, is_open, backgrounded, last_ts, timeout = 0, False, False, 0, DEFAULT_TIMEOUT_MS
    for event in events:
        ts, kind = event["ts"], event["type"]
        if is_open:
            limit = timeout if backgrounded else IDLE_TIMEOUT_MS
            if ts >= last_ts + limit or kind == "app_launch":
                is_open = False
        if not is_open:
            number, is_open, last_ts = number + 1, True, ts
            backgrounded, timeout = kind == "app_background", DEFAULT_TIMEOUT_MS
        timeout = timeout_ms(event) if "session_timeout_s" in event else timeout
        last_ts = max(last_ts, ts)
        if kind == "app_foreground":
            backgrounded = False
        elif kind == "app_background":
            backgrounded = True
        elif kind == "app_terminate":
            is_open = False
        numbers.append(number)
    return numbers


def lifecycle_kinds(events: list[Event]) -> Counter[str]:
    """What follows each background (or a foreground left behind) in one device's events."""
    kinds: Counter[str] = Counter()
    backgrounded = False
    for previous, event in itertools.pairwise(events):
        gap, kind = event["ts"] - previous["ts"], event["type"]
        if previous["type"] == "app_terminate":
            kinds[
                "launch_after_terminate" if kind == "app_launch" else "event_after_terminate"
            ] += 1
        elif backgrounded:
            within = gap < timeout_ms(event)
            if kind == "app_foreground":
                kinds["resume_within_timeout" if within else "resume_past_timeout"] += 1
            elif kind == "app_launch":
                kinds["force_quit" if within else "launch_past_timeout"] += 1
            elif kind == "app_terminate":
                kinds["terminate"] += 1
            else:
                kinds["event_while_backgrounded"] += 1
        elif kind == "app_launch":
            kinds["crash_force_quit" if gap < IDLE_TIMEOUT_MS else "foreground_idle"] += 1
        if kind == "app_background":
            backgrounded = True
        elif kind in ("app_foreground", "app_launch", "app_terminate"):
            backgrounded = False
    return kinds


def expand(message: bytes) -> list[Event]:
    """The events of one valid message, batch fields inherited as SPEC section 1 says."""
    document = orjson.loads(message)
    if "events" not in document:
        return [document]
    inherited = {key: document[key] for key in INHERITED if key in document}
    return [
        {**event, **{k: v for k, v in inherited.items() if k not in event}}
        for event in document["events"]
    ]


_check_schema = validator("event")


def event_problem(event: Any) -> str | None:
    """Why an event (after inheritance) would be rejected by validation, or None."""
    if not isinstance(event, dict):
        return "not_an_object"
    if not _check_schema.is_valid(event):
        return f"invalid: {_check_schema.explain(event)}"
    if event["ts"] < MIN_TS_MS:
        return "ts_before_2000"
    return None


def valid_events(message: bytes) -> list[Event]:
    """The events of a message that pass validation (bad ones skipped, as the parser would)."""
    try:
        document = orjson.loads(message)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(document, dict) or not isinstance(document.get("events", []), list):
        return []
    return [event for event in expand(message) if event_problem(event) is None]


def is_bad(event: Event) -> bool:
    return "-bad-" in event["event_id"]


def message_problems(message: bytes) -> list[str]:
    """The bad kind of a message, or of each bad event inside a batch; [] for a good one."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        return ["garbage_bytes"]
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ["truncated_json"]
    if isinstance(document, list):
        return ["json_array"]
    if "events" in document and not isinstance(document["events"], list):
        return ["batch_events_not_array"]
    events = expand(message) if "events" in document else [document]
    return [_bad_kind(event) for event in events if event_problem(event) is not None]


def _bad_kind(event: Event) -> str:
    missing = [
        field for field in ("event_id", "app_id", "device_id", "type", "ts") if field not in event
    ]
    if missing:
        return "missing_field"
    if isinstance(event["ts"], str):
        return "ts_as_string"
    if event["type"] == "app_crash":
        return "unknown_type"
    if "attribute" in event and not isinstance(event["attribute"]["value"], int | float):
        return "increment_not_numeric"
    if event["ts"] < MIN_TS_MS:
        return "ts_before_2000"
    return f"unexpected: {event}"


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


def test_every_device_events_are_non_decreasing_in_ts() -> None:
    by_device = first_sendings(default_events())
    assert len(by_device) == 1000
    for events in by_device.values():
        stamps = [event["ts"] for event in events]
        assert stamps == sorted(stamps)
        assert events[0]["type"] == "app_launch"


def test_event_ids_are_unique_and_name_their_device() -> None:
    by_device = first_sendings(default_events())
    ids = [event["event_id"] for events in by_device.values() for event in events]
    assert len(ids) == len(set(ids))
    for device_id, events in by_device.items():
        assert all(event["event_id"].startswith(f"{device_id}-") for event in events)


def test_events_per_device_is_about_the_mean_asked() -> None:
    for mean in (10, 40):
        by_device = first_sendings(generate_events(spec(events_per_device=mean)))
        average = sum(len(events) for events in by_device.values()) / len(by_device)
        assert mean * 0.85 < average < mean * 1.15


def test_every_valid_event_passes_the_event_schema() -> None:
    problems = Counter(event_problem(event) for event in default_events())
    assert problems == Counter({None: len(default_events())})


def test_duplicates_come_at_the_requested_rate_with_identical_content() -> None:
    for rate in (0.01, 0.05):
        events = list(generate_events(spec(devices=500, duplicate_rate=rate)))
        first: dict[str, Event] = {}
        retries: list[Event] = []
        for event in events:
            if event["event_id"] in first:
                retries.append(event)
                assert event == first[event["event_id"]]
            else:
                first[event["event_id"]] = event
        assert rate * 0.75 < len(retries) / len(first) < rate * 1.25
        assert len({event["event_id"] for event in retries}) == len(retries)  # sent twice at most


def test_retried_terminates_occur() -> None:
    counts = Counter(event["event_id"] for event in default_events())
    retried_types = Counter(
        event["type"] for event in default_events() if counts[event["event_id"]] > 1
    )
    assert retried_types["app_terminate"] >= 2 * 2  # each counted at both sendings
    assert retried_types["screen_view"] > retried_types["app_terminate"]


def test_retry_arrives_while_its_session_is_the_latest() -> None:
    """So the engine still knows its event_id, live or offline (SPEC rule 1)."""
    for batch_size in (1, 20):
        events = list(generate_events(spec(batch_size=batch_size, duplicate_rate=0.05)))
        by_device: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_device[event["device_id"]].append(event)
        checked = 0
        for device_events in by_device.values():
            firsts = next(iter(first_sendings(device_events).values()))
            number = dict(
                zip((e["event_id"] for e in firsts), session_numbers(firsts), strict=True)
            )
            seen: set[str] = set()
            latest = None
            for event in device_events:
                if event["event_id"] in seen:
                    assert number[event["event_id"]] == number[latest]
                    checked += 1
                else:
                    seen.add(event["event_id"])
                    latest = event["event_id"]
        assert checked > 100


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


def test_gaps_after_background_straddle_the_timeout() -> None:
    """Resumes and launches exactly 1 ms before, at and 1 ms after the timeout all happen."""
    near_timeout: Counter[tuple[str, int]] = Counter()  # (type, gap - timeout)
    default_timeout_gaps: Counter[int] = Counter()
    for events in first_sendings(default_events()).values():
        backgrounded = False
        for previous, event in itertools.pairwise(events):
            gap = event["ts"] - previous["ts"]
            if backgrounded and abs(gap - timeout_ms(event)) <= 1:
                near_timeout[event["type"], gap - timeout_ms(event)] += 1
                default_timeout_gaps[gap] += "session_timeout_s" not in event
            backgrounded = event["type"] == "app_background" or (
                backgrounded and event["type"] == "custom_event"
            )
    for boundary in (
        ("app_foreground", -1),
        ("app_foreground", 0),
        ("app_foreground", 1),
        ("app_launch", -1),
        ("app_launch", 0),
    ):
        assert near_timeout[boundary] >= 3, boundary
    for gap in (59_999, 60_000, 60_001):
        assert default_timeout_gaps[gap] >= 5


def test_every_lifecycle_kind_occurs() -> None:
    kinds: Counter[str] = Counter()
    for events in first_sendings(default_events()).values():
        kinds += lifecycle_kinds(events)
    for kind in (
        "resume_within_timeout",
        "resume_past_timeout",
        "terminate",
        "force_quit",
        "crash_force_quit",
        "launch_past_timeout",
        "foreground_idle",
        "event_while_backgrounded",
        "launch_after_terminate",
    ):
        assert kinds[kind] >= 10, kind
    assert kinds["event_after_terminate"] == 0


def test_sessions_end_every_way_the_spec_knows() -> None:
    numbers = [session_numbers(events) for events in first_sendings(default_events()).values()]
    sessions = sum(max(device_numbers) for device_numbers in numbers)
    assert sessions > 2 * 1000  # several sessions per device


def test_users_log_in_change_and_stay_anonymous() -> None:
    in_session_logins = user_changes = 0
    null_users = absent_users = 0
    custom_timeouts: set[float] = set()
    for events in first_sendings(default_events()).values():
        users = [event.get("user_id", "absent") for event in events]
        null_users += users.count(None)
        absent_users += users.count("absent")
        for previous, event in itertools.pairwise(events):
            before, after = previous.get("user_id"), event.get("user_id")
            if before is None and after is not None and event["type"] != "app_launch":
                in_session_logins += 1
            elif before is not None and after is not None and before != after:
                user_changes += 1
        custom_timeouts.update(e["session_timeout_s"] for e in events if "session_timeout_s" in e)
    assert in_session_logins >= 50
    assert user_changes >= 5
    assert null_users > 0 and absent_users > 0
    assert custom_timeouts == {30, 120}


def test_session_attributes_set_and_increment() -> None:
    changes = Counter(
        (event["attribute"]["op"], event["attribute"]["key"])
        for event in default_events()
        if event["type"] == "session_attribute"
    )
    for change in (
        ("set", "plan"),
        ("increment", "cart_items"),
        ("set", "level"),
        ("increment", "level"),
    ):
        assert changes[change] > 0


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
