"""The Mixpanel Import API format of pipeline/partners/mixpanel.py."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from pipeline.partners.mixpanel import insert_id, translate

MIXPANEL_INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")


@given(st.text(min_size=1))
def test_insert_id_always_fits_mixpanel_rule(key):
    assert MIXPANEL_INSERT_ID.fullmatch(insert_id(key))


@given(st.from_regex(MIXPANEL_INSERT_ID, fullmatch=True))
def test_insert_id_keeps_ids_that_already_fit(key):
    assert insert_id(key) == key


def test_insert_ids_are_stable_and_unique(canonical_input):
    def keys():
        return [translate(r)[0]["properties"]["$insert_id"] for r in canonical_input]

    assert keys() == keys()
    assert len(set(keys())) == len(canonical_input)


def test_long_event_ids_are_hashed_to_36_characters(make_event):
    [output] = translate(make_event(event_id="evt:" + "x" * 100))
    assert len(output["properties"]["$insert_id"]) == 36


def test_distinct_id_is_the_user_when_known_else_the_prefixed_device(make_event):
    [anonymous] = translate(make_event(user_id=None))
    [known] = translate(make_event(user_id="user-9"))
    assert anonymous["properties"]["distinct_id"] == "$device:device-0001"
    assert "$user_id" not in anonymous["properties"]
    assert known["properties"]["distinct_id"] == "user-9"
    assert known["properties"]["$user_id"] == "user-9"
    assert known["properties"]["$device_id"] == "device-0001"


def test_time_is_epoch_ms(make_event):
    [output] = translate(make_event(ts=1_717_243_201_500))
    assert output["properties"]["time"] == 1_717_243_201_500


def test_session_records_use_mparticle_session_event_names(make_session_start, make_session_end):
    assert translate(make_session_start())[0]["event"] == "session-start"
    assert translate(make_session_end())[0]["event"] == "session-end"


def test_attributes_cannot_spoof_mixpanel_fields(make_event):
    spoof = {"$user_id": "other", "distinct_id": "other", "time": 0, "token": "t", "$os": "iOS"}
    [output] = translate(make_event(user_id=None, attributes=spoof))
    properties = output["properties"]
    assert "$user_id" not in properties
    assert properties["distinct_id"] == "$device:device-0001"
    assert properties["time"] != 0
    assert "token" not in properties
    assert properties["user_id"] == "other"  # kept, without the reserved "$"
    assert properties["os"] == "iOS"


def test_event_names_never_start_with_dollar(make_event):
    assert translate(make_event(name="$merge"))[0]["event"] == "merge"


def test_insert_id_edge_cases():
    assert insert_id("---") == "---"
    assert insert_id("a" * 36) == "a" * 36
    assert insert_id("a" * 37) != "a" * 37
    assert insert_id("ab\n") != "ab\n"
    assert insert_id("ÄB") != "ÄB"


def test_a_cleaned_token_is_dropped_and_the_first_of_two_names_wins(make_event):
    [output] = translate(make_event(attributes={"a": 1, "$token": "secret", "$a": 2}))
    properties = output["properties"]
    assert "token" not in properties
    assert properties["a"] == 1
