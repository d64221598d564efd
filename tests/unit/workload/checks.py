"""What the workload tests check the generator's events and messages against: the spec's
session rules, its validation, and the bad kinds, each stated here on its own."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import cache
from typing import Any

import orjson

from pipeline.input.schemas import validator
from pipeline.workload.generator import WorkloadSpec, generate_events

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
