"""SPEC section 3, rule by rule, against the pure engine."""

from __future__ import annotations

from itertools import count
from typing import Any

import pytest

from pipeline.engine import Applied, DeviceState, SessionConfig, SessionRules

T0 = 1_790_000_000_000
SECOND = 1000
_ids = count(1)


def ev(kind: str, ts: int, **fields: Any) -> dict[str, Any]:
    """An input event of device d1 of app a1."""
    event = {
        "event_id": f"e{next(_ids)}",
        "app_id": "a1",
        "device_id": "d1",
        "type": kind,
        "ts": ts,
    }
    event.update(fields)
    return event


class Device:
    """One device driven through the rules, collecting what they emit."""

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.rules = SessionRules(config or SessionConfig())
        self.state = DeviceState("a1", "d1")
        self.out: list[dict[str, Any]] = []

    def send(self, *events: dict[str, Any]) -> list[Applied]:
        return [self.rules.apply(self.state, e, self.out) for e in events]

    def expire(self, now: int) -> bool:
        return self.rules.expire(self.state, now, self.out)

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.out if r["type"] == kind]

    @property
    def ends(self) -> list[dict[str, Any]]:
        return self.records("session_end")

    @property
    def starts(self) -> list[dict[str, Any]]:
        return self.records("session_start")

    @property
    def enriched(self) -> list[dict[str, Any]]:
        return [r for r in self.out if "session_seq" in r]


def backgrounded_device(last_ts: int = T0 + 5 * SECOND) -> Device:
    device = Device()
    device.send(ev("app_launch", T0), ev("app_background", last_ts))
    return device


# Rule 2: expiry at exactly last_ts + timeout.


def test_event_at_exactly_last_ts_plus_timeout_starts_new_session() -> None:
    device = backgrounded_device()
    device.send(ev("app_foreground", T0 + 5 * SECOND + 60 * SECOND))
    assert [e["end_reason"] for e in device.ends] == ["timeout"]
    assert len(device.starts) == 2
    assert device.ends[0]["end_ts"] == T0 + 5 * SECOND


def test_event_one_ms_before_timeout_resumes_same_session() -> None:
    device = backgrounded_device()
    device.send(ev("app_foreground", T0 + 65 * SECOND - 1))
    assert device.ends == []
    assert len(device.starts) == 1
    assert device.enriched[-1]["session_seq"] == 3


def test_events_in_background_push_the_deadline_back() -> None:
    device = backgrounded_device()
    device.send(ev("custom_event", T0 + 50 * SECOND, name="sync"))
    device.send(ev("app_foreground", T0 + 100 * SECOND))  # 50 s after the last event
    assert device.ends == []
    assert len(device.starts) == 1
    assert device.enriched[-1]["session_number"] == 1


def test_event_in_background_does_not_foreground_the_session() -> None:
    device = backgrounded_device()
    device.send(ev("screen_view", T0 + 10 * SECOND, name="home"))
    assert device.rules.deadline(device.state) == T0 + 70 * SECOND


def test_foreground_session_never_times_out_before_idle_timeout() -> None:
    device = Device()
    device.send(ev("app_launch", T0), ev("screen_view", T0 + 1700 * SECOND))
    assert device.ends == []


def test_foreground_session_closes_idle_at_exactly_idle_timeout() -> None:
    device = Device()
    device.send(ev("app_launch", T0), ev("screen_view", T0 + 1800 * SECOND))
    assert [e["end_reason"] for e in device.ends] == ["idle"]
    assert device.enriched[-1]["session_number"] == 2


def test_background_past_timeout_starts_new_session_with_previous_fields() -> None:
    device = backgrounded_device()
    device.send(ev("app_foreground", T0 + 200 * SECOND))
    second = device.starts[1]
    first_end = device.ends[0]
    assert second["session_number"] == 2
    assert second["previous_session_id"] == first_end["session_id"]
    assert second["previous_session_start_ts"] == T0
    assert second["previous_session_duration_ms"] == 5 * SECOND


# Rule 3: launch while open is a force quit.


def test_launch_while_session_open_closes_it_as_force_quit() -> None:
    device = Device()
    device.send(
        ev("app_launch", T0), ev("screen_view", T0 + SECOND), ev("app_launch", T0 + 2 * SECOND)
    )
    assert [e["end_reason"] for e in device.ends] == ["force_quit"]
    assert device.ends[0]["end_ts"] == T0 + SECOND
    assert [s["session_number"] for s in device.starts] == [1, 2]


# Rule 5: terminate.


def test_terminate_closes_the_session_after_applying_it() -> None:
    device = Device()
    device.send(ev("app_launch", T0), ev("app_terminate", T0 + 3 * SECOND))
    (end,) = device.ends
    assert end["end_reason"] == "terminate"
    assert end["event_count"] == 2
    assert end["end_ts"] == T0 + 3 * SECOND
    assert device.state.open is None


def test_event_after_terminate_opens_new_session_even_within_timeout() -> None:
    device = Device()
    device.send(
        ev("app_launch", T0), ev("app_terminate", T0 + SECOND), ev("screen_view", T0 + 2 * SECOND)
    )
    assert len(device.starts) == 2


# Rule 1: duplicates.


def test_duplicate_in_open_session_has_no_effect() -> None:
    device = Device()
    launch = ev("app_launch", T0)
    view = ev("screen_view", T0 + SECOND)
    assert device.send(launch, view, dict(view)) == [Applied.APPLIED] * 2 + [Applied.DUPLICATE]
    assert len(device.enriched) == 2
    assert device.state.open is not None and device.state.open.event_count == 2


def test_retried_terminate_is_a_duplicate_not_a_new_session() -> None:
    device = Device()
    terminate = ev("app_terminate", T0 + SECOND)
    device.send(ev("app_launch", T0), terminate)
    assert device.send(dict(terminate)) == [Applied.DUPLICATE]
    assert len(device.starts) == 1
    assert device.state.open is None


def test_duplicate_of_most_recently_closed_session_after_timeout_is_dropped() -> None:
    device = backgrounded_device()
    background = device.enriched[-1]
    original = {k: v for k, v in background.items() if not k.startswith("session_")}
    device.send(ev("app_foreground", T0 + 300 * SECOND))
    assert device.send(original) == [Applied.DUPLICATE]
    assert len(device.starts) == 2


# Rule 1, the duplicate window: sessions before the last closed one are remembered while they
# ended at most dedup_window_s before the device's latest event time.

HOUR = 3600 * SECOND


def closed_sessions(device: Device, *starts: int) -> list[dict[str, Any]]:
    """One launch + terminate session at each start time; returns the launches as sent."""
    launches = []
    for start in starts:
        launch = ev("app_launch", start)
        device.send(launch, ev("app_terminate", start + 1))
        launches.append(launch)
    return launches


def test_duplicate_two_sessions_back_within_the_window_is_dropped() -> None:
    device = Device()
    first, _ = closed_sessions(device, T0, T0 + 2)
    assert device.send(dict(first)) == [Applied.DUPLICATE]
    assert len(device.starts) == 2


def test_late_sdk_retry_after_a_live_close_opens_no_session_dated_before() -> None:
    # The case: session 1 timed out live, session 2 came and went, then the SDK's
    # retry of a session-1 upload arrives ~10 s later.
    device = backgrounded_device()
    view = ev("screen_view", T0 + 2 * SECOND)
    device.send(view)
    device.expire(T0 + 70 * SECOND)
    closed_sessions(device, T0 + 80 * SECOND)
    assert device.send(dict(view)) == [Applied.DUPLICATE]
    assert [s["start_ts"] for s in device.starts] == [T0, T0 + 80 * SECOND]


def test_session_ended_exactly_window_before_the_latest_event_is_remembered() -> None:
    device = Device()
    first, _ = closed_sessions(device, T0, T0 + 10)  # the first ends at T0 + 1
    device.send(ev("app_launch", T0 + 1 + HOUR))  # latest event time: end + window exactly
    assert device.send(dict(first)) == [Applied.DUPLICATE]


def test_session_ended_more_than_window_before_the_latest_event_is_forgotten() -> None:
    device = Device()
    first, _ = closed_sessions(device, T0, T0 + 10)
    device.send(ev("app_launch", T0 + 2 + HOUR))  # one ms past the window
    assert device.send(dict(first)) == [Applied.APPLIED]
    # Applied again: the launch force-quits the open session and opens another.
    assert [e["end_reason"] for e in device.ends][-1] == "force_quit"
    assert device.enriched[-1]["session_number"] == 4


def test_a_session_a_late_event_dated_before_the_window_opened_is_forgotten_too() -> None:
    # Sessions are not closed in the order of their end: a re-sent launch from long ago
    # (forgotten, so applied) opens a session that ends before sessions closed ahead of it.
    device = Device()
    old, _ = closed_sessions(device, T0, T0 + 2 * HOUR)
    closed_sessions(device, T0 + 2 * HOUR + 10)  # the session of T0 is out of the window
    assert device.send(dict(old)) == [Applied.APPLIED]  # opens a session dated T0
    closed_sessions(device, T0 + 2 * HOUR + 20, T0 + 2 * HOUR + 30)
    # That session ended at T0, two hours before the latest event: out of the window.
    assert device.send(dict(old)) == [Applied.APPLIED]


def test_most_recently_closed_session_is_remembered_past_the_window() -> None:
    device = Device()
    [launch] = closed_sessions(device, T0)
    device.send(ev("screen_view", T0 + 10 * HOUR))  # opens session 2, hours later
    assert device.send(dict(launch)) == [Applied.DUPLICATE]
    device.send(ev("app_terminate", T0 + 10 * HOUR + 1))
    # Session 1 is now two back, and ended outside the window: forgotten.
    assert device.send(dict(launch)) == [Applied.APPLIED]


def test_duplicate_window_is_configurable() -> None:
    device = Device(SessionConfig(dedup_window_s=10))
    first, _ = closed_sessions(device, T0, T0 + 10)
    device.send(ev("app_launch", T0 + 10 * SECOND + 1))
    assert device.send(dict(first)) == [Applied.DUPLICATE]
    device.send(ev("screen_view", T0 + 10 * SECOND + 2))
    assert device.send(dict(first)) == [Applied.APPLIED]


def test_past_dedup_max_ids_the_oldest_sessions_ids_are_forgotten_first() -> None:
    device = Device(SessionConfig(dedup_max_ids=4))
    s1 = [ev("app_launch", T0), ev("screen_view", T0 + 1), ev("app_terminate", T0 + 2)]
    s2 = [ev("app_launch", T0 + 10), ev("app_terminate", T0 + 11)]
    s3 = [ev("app_launch", T0 + 20), ev("app_terminate", T0 + 21)]
    device.send(*s1, *s2, *s3)
    # 7 ids, 4 kept: s3's and s2's (the last closed), none of s1's.
    assert [device.send(dict(e)) for e in s2 + s3] == [[Applied.DUPLICATE]] * 4
    device = Device(SessionConfig(dedup_max_ids=5))
    device.send(*s1, *s2, *s3)
    # 5 kept: s1 loses its two oldest ids, keeps its terminate.
    assert device.send(dict(s1[2])) == [Applied.DUPLICATE]
    assert device.send(dict(s1[0])) == [Applied.APPLIED]


def test_an_open_session_keeps_its_newest_dedup_max_ids() -> None:
    device = Device(SessionConfig(dedup_max_ids=3))
    events = [ev("app_launch", T0), *(ev("screen_view", T0 + i) for i in range(1, 5))]
    device.send(*events)
    assert device.state.open is not None
    assert list(device.state.open.event_ids) == [e["event_id"] for e in events[-3:]]
    assert device.send(dict(events[-1])) == [Applied.DUPLICATE]


def test_duplicate_does_not_extend_the_session() -> None:
    device = backgrounded_device()
    background = {k: v for k, v in device.enriched[-1].items() if not k.startswith("session_")}
    device.send(dict(background, ts=T0 + 50 * SECOND))
    assert device.rules.deadline(device.state) == T0 + 65 * SECOND


# Rule 4: open.


def test_background_event_opens_a_backgrounded_session() -> None:
    device = Device()
    device.send(ev("app_background", T0))
    assert len(device.starts) == 1
    assert device.rules.deadline(device.state) == T0 + 60 * SECOND
    device.send(ev("app_foreground", T0 + 60 * SECOND))
    assert [e["end_reason"] for e in device.ends] == ["timeout"]
    assert device.ends[0]["foreground_ms"] == 0


def test_any_event_opens_a_session_when_none_is_open() -> None:
    device = Device()
    device.send(ev("custom_event", T0, name="x"))
    assert device.starts[0]["start_ts"] == T0
    assert device.rules.deadline(device.state) == T0 + 1800 * SECOND


def test_session_start_is_emitted_before_the_opening_enriched_event() -> None:
    device = Device()
    device.send(ev("app_launch", T0, user_id="u1"))
    assert [r["type"] for r in device.out] == ["session_start", "app_launch"]
    assert device.out[0]["user_id"] == "u1"
    assert device.out[0]["previous_session_id"] is None


# Session attributes.


def test_attribute_set_and_increment() -> None:
    device = Device()
    device.send(
        ev("app_launch", T0),
        ev("session_attribute", T0 + 1, attribute={"op": "set", "key": "plan", "value": "pro"}),
        ev("session_attribute", T0 + 2, attribute={"op": "increment", "key": "n", "value": 2}),
        ev("session_attribute", T0 + 3, attribute={"op": "increment", "key": "n", "value": 0.5}),
        ev("session_attribute", T0 + 4, attribute={"op": "set", "key": "flag", "value": None}),
        ev("app_terminate", T0 + 5),
    )
    assert device.ends[0]["attributes"] == {"plan": "pro", "n": 2.5, "flag": None}


def test_increment_of_non_number_is_rejected_with_no_effect() -> None:
    device = Device()
    device.send(
        ev("app_launch", T0),
        ev("session_attribute", T0 + 1, attribute={"op": "set", "key": "plan", "value": "pro"}),
    )
    bad = ev("session_attribute", T0 + 50, attribute={"op": "increment", "key": "plan", "value": 1})
    assert device.send(bad) == [Applied.ATTRIBUTE_NOT_NUMERIC]
    assert device.state.open is not None
    assert device.state.open.last_ts == T0 + 1
    assert device.state.open.event_count == 2


def test_increment_of_boolean_is_rejected() -> None:
    device = Device()
    device.send(
        ev("app_launch", T0),
        ev("session_attribute", T0 + 1, attribute={"op": "set", "key": "vip", "value": True}),
    )
    change = {"op": "increment", "key": "vip", "value": 1}
    assert device.send(ev("session_attribute", T0 + 2, attribute=change)) == [
        Applied.ATTRIBUTE_NOT_NUMERIC
    ]


def test_attributes_reset_in_the_next_session() -> None:
    device = Device()
    device.send(
        ev("app_launch", T0),
        ev("session_attribute", T0 + 1, attribute={"op": "set", "key": "plan", "value": "pro"}),
        ev("app_launch", T0 + 2),
        ev("session_attribute", T0 + 3, attribute={"op": "increment", "key": "plan", "value": 1}),
        ev("app_terminate", T0 + 4),
    )
    assert [e["attributes"] for e in device.ends] == [{"plan": "pro"}, {"plan": 1}]


def test_increment_after_expiry_applies_to_the_new_empty_session() -> None:
    device = Device()
    device.send(
        ev("app_launch", T0),
        ev("session_attribute", T0 + 1, attribute={"op": "set", "key": "k", "value": "s"}),
        ev("app_background", T0 + 2),
    )
    change = {"op": "increment", "key": "k", "value": 1}
    assert device.send(ev("session_attribute", T0 + 2 + 60 * SECOND, attribute=change)) == [
        Applied.APPLIED
    ]
    assert device.state.open is not None and device.state.open.attributes == {"k": 1}


# Timeouts: per event and per app.


def test_per_event_timeout_applies_from_that_event_on() -> None:
    device = Device()
    device.send(ev("app_launch", T0), ev("app_background", T0 + 1, session_timeout_s=10))
    device.send(ev("app_foreground", T0 + 1 + 10 * SECOND))
    assert [e["end_reason"] for e in device.ends] == ["timeout"]


def test_per_event_timeout_longer_than_default_keeps_session() -> None:
    device = Device()
    device.send(ev("app_launch", T0), ev("app_background", T0 + 1, session_timeout_s=300))
    device.send(ev("app_foreground", T0 + 1 + 200 * SECOND))
    assert device.ends == []


def test_per_app_timeout_from_config() -> None:
    device = Device(SessionConfig(app_session_timeout_s={"a1": 5.0}))
    device.send(ev("app_launch", T0), ev("app_background", T0 + 1), ev("app_foreground", T0 + 5001))
    assert [e["end_reason"] for e in device.ends] == ["timeout"]
    other = Device(SessionConfig(app_session_timeout_s={"other-app": 5.0}))
    other.send(ev("app_launch", T0), ev("app_background", T0 + 1), ev("app_foreground", T0 + 5001))
    assert other.ends == []


def test_per_event_timeout_is_ignored_when_the_profile_does_not_honor_it() -> None:
    device = Device(SessionConfig(honor_event_timeout=False))
    device.send(ev("app_launch", T0), ev("app_background", T0 + 1, session_timeout_s=10))
    device.send(ev("app_foreground", T0 + 1 + 10 * SECOND))
    assert device.ends == []


# Expiry with no new events.


@pytest.mark.parametrize(("offset", "expired"), [(60 * SECOND - 1, False), (60 * SECOND, True)])
def test_expire_closes_backgrounded_session_at_its_deadline(offset: int, expired: bool) -> None:
    device = backgrounded_device(T0 + 1)
    assert device.expire(T0 + 1 + offset) is expired
    assert [e["end_reason"] for e in device.ends] == (["timeout"] if expired else [])


def test_expire_closes_foreground_session_as_idle() -> None:
    device = Device()
    device.send(ev("app_launch", T0))
    assert device.expire(T0 + 1800 * SECOND)
    assert device.ends[0]["end_reason"] == "idle"


def test_close_at_end_uses_timeout_when_backgrounded_and_idle_in_foreground() -> None:
    background = backgrounded_device()
    background.rules.close_at_end(background.state, background.out)
    foreground = Device()
    foreground.send(ev("app_launch", T0))
    foreground.rules.close_at_end(foreground.state, foreground.out)
    assert background.ends[0]["end_reason"] == "timeout"
    assert foreground.ends[0]["end_reason"] == "idle"


# Closing: durations, foreground time, users.


def test_foreground_ms_counts_only_foreground_spans() -> None:
    device = Device()
    device.send(
        ev("app_launch", T0),
        ev("app_background", T0 + 10 * SECOND),
        ev("app_foreground", T0 + 30 * SECOND),
        ev("app_background", T0 + 35 * SECOND),
        ev("app_foreground", T0 + 40 * SECOND),
        ev("app_terminate", T0 + 42 * SECOND),
    )
    (end,) = device.ends
    assert end["duration_ms"] == 42 * SECOND
    assert end["foreground_ms"] == 17 * SECOND


def test_user_ids_in_first_seen_order_and_last_non_null_user() -> None:
    device = Device()
    device.send(
        ev("app_launch", T0),
        ev("screen_view", T0 + 1, user_id="u1"),
        ev("screen_view", T0 + 2, user_id="u2"),
        ev("screen_view", T0 + 3, user_id="u1"),
        ev("screen_view", T0 + 4, user_id=None),
        ev("app_terminate", T0 + 5),
    )
    (end,) = device.ends
    assert end["user_ids"] == ["u1", "u2"]
    assert end["user_id"] == "u1"


def test_out_of_order_event_does_not_move_last_ts_back() -> None:
    device = backgrounded_device(T0 + 30 * SECOND)
    device.send(ev("custom_event", T0 + 10 * SECOND))
    assert device.rules.deadline(device.state) == T0 + 90 * SECOND


def test_enriched_event_keeps_unknown_fields_and_gets_its_session() -> None:
    device = Device()
    device.send(ev("app_launch", T0, sdk="ios-8.1"), ev("screen_view", T0 + 1, name="home"))
    first, second = device.enriched
    assert first["sdk"] == "ios-8.1"
    assert second["session_seq"] == 2
    assert second["session_start_ts"] == T0
    assert second["session_id"] == device.starts[0]["session_id"]


def test_session_ids_are_deterministic_and_distinct() -> None:
    def run() -> list[str]:
        device = Device()
        events = [
            {"event_id": "x1", "app_id": "a1", "device_id": "d1", "type": "app_launch", "ts": T0},
            {
                "event_id": "x2",
                "app_id": "a1",
                "device_id": "d1",
                "type": "app_launch",
                "ts": T0 + 1,
            },
        ]
        device.send(*events)
        return [s["session_id"] for s in device.starts]

    assert run() == run()
    assert len(set(run())) == 2


def test_foreground_ms_never_exceeds_duration_with_out_of_order_events() -> None:
    device = Device()
    device.send(
        ev("app_launch", T0 + 100),
        ev("app_foreground", T0),  # stamped before the session started
        ev("app_background", T0 + 200),
        ev("app_foreground", T0 + 150),  # out of order: overlaps the span already counted
        ev("app_terminate", T0 + 200),
    )
    (end,) = device.ends
    assert end["duration_ms"] == 100
    assert end["foreground_ms"] == 100


@pytest.mark.parametrize(
    ("start", "step"), [(2**64 - 1, 1), (-(2**63), -1), (1e308, 1e308)], ids=["u64", "i64", "inf"]
)
def test_increment_out_of_range_is_refused_with_no_effect(start: float, step: float) -> None:
    device = Device()
    device.send(
        ev("app_launch", T0),
        ev("session_attribute", T0 + 1, attribute={"op": "set", "key": "n", "value": start}),
    )
    change = {"op": "increment", "key": "n", "value": step}
    assert device.send(ev("session_attribute", T0 + 2, attribute=change)) == [
        Applied.ATTRIBUTE_OUT_OF_RANGE
    ]
    assert device.state.open is not None and device.state.open.attributes == {"n": start}
    assert device.state.open.event_count == 2


def test_session_ids_are_rfc4122_uuid5_of_the_session_identity() -> None:
    import uuid

    from pipeline.engine.ids import _SESSION_NAMESPACE, session_id_for

    cases = [("a", "d", 1, T0, "e1"), ("app-ü", "dév", 12, 0, "x" * 128)]
    for app_id, device_id, number, start_ts, event_id in cases:
        name = f"{app_id}\x1f{device_id}\x1f{number}\x1f{start_ts}\x1f{event_id}"
        expected = str(uuid.uuid5(_SESSION_NAMESPACE, name))
        assert session_id_for(app_id, device_id, number, start_ts, event_id) == expected


def test_enriched_record_is_a_copy_unless_the_event_is_handed_over() -> None:
    rules = SessionRules(SessionConfig())
    event = ev("app_launch", T0)
    sent = dict(event)
    out: list[dict[str, Any]] = []
    rules.apply(DeviceState("a1", "d1"), event, out)
    assert event == sent
    assert out[-1] is not event and out[-1]["session_seq"] == 1

    handed = ev("app_launch", T0)
    out.clear()
    rules.apply(DeviceState("a1", "d1"), handed, out, in_place=True)
    assert out[-1] is handed and handed["session_seq"] == 1
