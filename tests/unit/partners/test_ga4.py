"""The GA4 Measurement Protocol format of pipeline/partners/ga4.py."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from pipeline.partners.ga4 import RESERVED_EVENT_NAMES, ga4_name, translate

GA4_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
RESERVED_PREFIXES = ("firebase_", "ga_", "google_", "gtag_")


def event_of(record):
    [body] = translate(record)
    [event] = body["events"]
    return event


@given(st.text())
def test_sanitized_names_follow_ga4_rules(raw):
    name = ga4_name(raw, "event", RESERVED_EVENT_NAMES)
    assert GA4_NAME.fullmatch(name)
    assert not name.startswith(RESERVED_PREFIXES)
    assert name not in RESERVED_EVENT_NAMES


def test_names_are_sanitized_readably():
    assert ga4_name("Add To Cart", "event", RESERVED_EVENT_NAMES) == "Add_To_Cart"
    assert ga4_name("2FA: step 1", "event", RESERVED_EVENT_NAMES) == "event_2FA_step_1"
    assert ga4_name("session_start", "event", RESERVED_EVENT_NAMES) == "event_session_start"
    assert ga4_name("google_ads", "param") == "param_google_ads"
    assert ga4_name("$$$", "param") == "param"


def test_body_identifies_the_device_and_the_known_user(make_event):
    [anonymous] = translate(make_event(user_id=None, ts=1_717_243_201_500))
    [known] = translate(make_event(user_id="user-5"))
    assert anonymous["client_id"] == "device-0001"
    assert "user_id" not in anonymous
    assert anonymous["timestamp_micros"] == 1_717_243_201_500_000
    assert known["user_id"] == "user-5"


def test_session_params_on_every_event(canonical_input):
    for record in canonical_input:
        params = event_of(record)["params"]
        start_ms = record.get("session_start_ts", record.get("start_ts"))
        assert params["session_id"] == str(start_ms // 1000)
        assert params["session_number"] == record["session_number"]
        assert params["engagement_time_msec"] >= 0


def test_session_start_record_is_a_ga4_session_start_event(make_session_start):
    # SPEC section 6: a `session_start` event (GA4 reserves the name for its own; see ga4.py).
    assert event_of(make_session_start())["name"] == "session_start"


def test_session_end_reports_foreground_time_as_engagement(make_session_end):
    event = event_of(make_session_end(foreground_ms=4_321))
    assert event["name"] == "session_end"
    assert event["params"]["engagement_time_msec"] == 4_321
    assert event["params"]["end_reason"] == "timeout"


def test_screen_view_carries_the_screen_name(make_event):
    event = event_of(make_event(type="screen_view", name="Home"))
    assert event["name"] == "screen_view"
    assert event["params"]["screen_name"] == "Home"


def test_app_background_is_renamed_since_ga4_reserves_it(make_event):
    assert event_of(make_event(type="app_background"))["name"] == "application_background"


def test_param_values_follow_ga4_types_and_limits(make_event):
    attributes = {"long": "v" * 150, "flag": True, "none": None, "list": [1], "n": 2.5}
    params = event_of(make_event(attributes=attributes))["params"]
    assert params["long"] == "v" * 100
    assert params["flag"] == "true"
    assert params["n"] == 2.5
    assert "none" not in params
    assert "list" not in params


def test_at_most_25_params_with_the_session_ones_kept(make_event):
    attributes = {f"attribute_{i}": i for i in range(40)}
    params = event_of(make_event(attributes=attributes))["params"]
    assert len(params) == 25
    assert {"session_id", "session_number", "engagement_time_msec"} <= set(params)


def test_attributes_do_not_override_session_params(make_event):
    spoof = {"session_id": "spoof", "session number": 99}
    params = event_of(make_event(attributes=spoof))["params"]
    assert params["session_id"] != "spoof"
    assert params["session_number"] == 1
