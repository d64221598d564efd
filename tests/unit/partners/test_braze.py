"""The Braze /users/track format of pipeline/partners/braze.py."""

from __future__ import annotations

from pipeline.partners.braze import alias_name, iso_time, translate


def test_known_user_is_the_external_id(make_event):
    [output] = translate(make_event(user_id="user-3"))
    assert output["external_id"] == "user-3"
    assert "user_alias" not in output


def test_anonymous_device_is_a_user_alias_braze_may_create(make_event):
    [output] = translate(make_event(user_id=None))
    assert output["user_alias"] == {"alias_name": "device-0001", "alias_label": "device_id"}
    assert output["_update_existing_only"] is False
    assert "external_id" not in output


def test_alias_name_within_236_bytes():
    assert alias_name("d" * 236) == "d" * 236
    assert len(alias_name("d" * 237)) == 64
    assert alias_name("é" * 200) != "é" * 200  # 400 bytes


def test_time_is_iso_8601_utc_with_milliseconds():
    assert iso_time(1_717_243_201_500) == "2024-06-01T12:00:01.500Z"
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1_717_243_200_007) == "2024-06-01T12:00:00.007Z"


def test_sessions_are_mparticle_session_events_with_session_id(
    make_session_start, make_session_end
):
    [start] = translate(make_session_start(session_id="s-9"))
    [end] = translate(make_session_end(session_id="s-9"))
    assert (start["name"], end["name"]) == ("Session Start", "Session End")
    assert start["properties"]["session_id"] == end["properties"]["session_id"] == "s-9"
    assert end["properties"]["plan"] == "pro"


def test_events_carry_session_id_and_their_attributes(make_event):
    [output] = translate(make_event(type="screen_view", name="Home", session_id="s-1"))
    assert output["name"] == "Viewed Home"
    assert output["app_id"] == "app.test"
    assert output["properties"] == {
        "session_id": "s-1",
        "session_number": 1,
        "color": "blue",
        "size": 3,
    }


def test_properties_follow_braze_rules(make_event):
    attributes = {"$plan": "pro", "none": None, "long": "x" * 300, "k" * 300: 1}
    [output] = translate(make_event(attributes=attributes))
    properties = output["properties"]
    assert properties["plan"] == "pro"
    assert "none" not in properties
    assert properties["long"] == "x" * 255
    assert properties["k" * 255] == 1


def test_alias_name_counts_bytes_not_characters():
    assert alias_name("é" * 118) == "é" * 118  # 236 bytes
    assert len(alias_name("é" * 119)) == 64


def test_when_keys_clean_to_the_same_name_the_first_wins(make_event):
    [first_plain] = translate(make_event(attributes={"plan": "a", "$plan": "b", "x": 1}))
    [first_dollar] = translate(make_event(attributes={"x": 1, "$plan": "b", "plan": "a"}))
    assert first_plain["properties"] == {
        "session_id": first_plain["properties"]["session_id"],
        "session_number": first_plain["properties"]["session_number"],
        "plan": "a",
        "x": 1,
    }
    assert first_dollar["properties"]["plan"] == "b"
    assert list(first_dollar["properties"])[2:] == ["x", "plan"]


def test_cleaned_keys_cannot_override_the_session_fields(make_event):
    [output] = translate(make_event(attributes={"a": 1, "$session_id": "spoof"}))
    assert output["properties"]["session_id"] != "spoof"
    assert output["properties"]["a"] == 1
