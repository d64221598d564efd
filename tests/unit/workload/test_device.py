"""The simulated devices: realistic lifecycles, users, attributes and SDK retries."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

from pipeline.workload.generator import generate_events
from tests.unit.workload.checks import (
    Event,
    default_events,
    event_problem,
    first_sendings,
    lifecycle_kinds,
    session_numbers,
    spec,
    timeout_ms,
)


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
