"""The Amplitude HTTP V2 format of pipeline/partners/amplitude.py."""

from __future__ import annotations

from pipeline.partners.amplitude import translate


def outputs(records):
    return [output for record in records for output in translate(record)]


def test_session_records_become_amplitude_session_events(make_session_start, make_session_end):
    [start] = translate(make_session_start(start_ts=1_000_000))
    [end] = translate(make_session_end(start_ts=1_000_000, end_ts=1_009_000, duration_ms=9_000))
    assert start["event_type"] == "session_start"
    assert start["time"] == start["session_id"] == 1_000_000
    assert end["event_type"] == "session_end"
    assert end["time"] == 1_009_000
    assert end["session_id"] == 1_000_000
    assert end["event_properties"]["duration_ms"] == 9_000


def test_session_id_is_the_session_start_in_ms_on_every_record(canonical_input):
    sessions = [r for r in canonical_input if r["type"] == "session_start"]
    starts = {session["session_id"]: session["start_ts"] for session in sessions}
    for record in canonical_input:
        [output] = translate(record)
        assert output["session_id"] == starts[record["session_id"]]


def test_insert_ids_are_stable_and_unique(canonical_input):
    first = [output["insert_id"] for output in outputs(canonical_input)]
    second = [output["insert_id"] for output in outputs(canonical_input)]
    assert first == second
    assert len(set(first)) == len(first)


def test_insert_id_of_an_event_is_its_event_id(make_event):
    [output] = translate(make_event(event_id="evt-77"))
    assert output["insert_id"] == "evt-77"


def test_user_id_only_when_known(make_event):
    [anonymous] = translate(make_event(user_id=None))
    [known] = translate(make_event(user_id="user-123"))
    assert "user_id" not in anonymous
    assert known["user_id"] == "user-123"
    assert known["device_id"] == anonymous["device_id"] == "device-0001"


def test_event_types_follow_mparticle_names(make_event):
    def event_type(**fields):
        return translate(make_event(**fields))[0]["event_type"]

    assert event_type(type="screen_view", name="Home") == "Viewed Home"
    assert event_type(type="custom_event", name="Share") == "Share"
    assert event_type(type="commerce_event", name="Purchase") == "Purchase"
    assert event_type(type="app_launch") == "Application Initialized"
    assert event_type(type="app_terminate") == "Application Exit"


def test_app_events_never_take_amplitude_special_event_types(make_event):
    for name in ("session_start", "session_end", "$identify", "[Amplitude] Revenue"):
        [output] = translate(make_event(name=name))
        assert output["event_type"] == f"App {name}"


def test_session_attributes_are_event_properties_without_overriding_session_fields(
    make_session_end,
):
    [output] = translate(make_session_end(attributes={"plan": "pro", "end_reason": "spoof"}))
    assert output["event_properties"]["plan"] == "pro"
    assert output["event_properties"]["end_reason"] == "timeout"
