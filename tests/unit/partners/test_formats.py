"""Checks every discovered partner format must pass: golden output, schema, purity.

A new format module gets these for free; it only needs its schema and its golden file.
"""

from __future__ import annotations

import copy
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.partners import FORMATS

ALL_FORMATS = sorted(FORMATS)


def translate_all(format_name, records):
    translate = FORMATS[format_name]
    return [output for record in records for output in translate(record)]


@pytest.mark.parametrize("format_name", ALL_FORMATS)
def test_output_matches_golden_file(format_name, canonical_input, golden):
    golden(format_name, translate_all(format_name, canonical_input))


@pytest.mark.parametrize("format_name", ALL_FORMATS)
def test_every_golden_record_validates_against_the_schema(
    format_name, canonical_input, schema_errors
):
    for output in translate_all(format_name, canonical_input):
        assert schema_errors(format_name, output) == [], output


@pytest.mark.parametrize("format_name", ALL_FORMATS)
def test_awkward_records_validate_against_the_schema(
    format_name, make_event, make_session_start, make_session_end, schema_errors
):
    awkward = [
        make_event(name="", attributes={}),
        make_event(type="screen_view", name="x" * 300, attributes={"$": 1, "": 2, "k" * 300: 3}),
        make_event(
            type="commerce_event",
            name="9 lives: $$$ / ga_promo",
            user_id="u",
            attributes={f"attribute {i}": "v" * 400 for i in range(40)},
        ),
        make_event(type="app_background", attributes={"nested": {"a": [1, 2]}, "none": None}),
        make_event(
            type="session_attribute",
            attribute={"op": "increment", "key": "$count", "value": 2.5},
            attributes={"token": "secret", "$user_id": "spoof", "time": 0},
        ),
        make_event(device_id="d" * 256, event_id="e" * 128),
        make_session_start(session_number=7, previous_session_id="s0", user_id="user-9"),
        make_session_end(user_id=None, user_ids=[], attributes={"end_reason": "spoof"}),
        make_session_end(end_reason="force_quit", foreground_ms=0, duration_ms=0),
    ]
    for record in awkward:
        for output in FORMATS[format_name](record):
            assert schema_errors(format_name, output) == [], (record, output)


@pytest.mark.parametrize("format_name", ALL_FORMATS)
def test_same_input_gives_the_same_output(format_name, canonical_input):
    first = translate_all(format_name, copy.deepcopy(canonical_input))
    second = translate_all(format_name, copy.deepcopy(canonical_input))
    assert first == second


@pytest.mark.parametrize("format_name", ALL_FORMATS)
def test_translate_leaves_its_input_unchanged(format_name, canonical_input):
    records = copy.deepcopy(canonical_input)
    translate_all(format_name, records)
    assert records == canonical_input


@pytest.mark.parametrize("format_name", ALL_FORMATS)
def test_one_output_per_canonical_record(format_name, canonical_input):
    for record in canonical_input:
        assert len(FORMATS[format_name](record)) == 1


attribute_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
    st.lists(st.text(max_size=5), max_size=3),
)


@pytest.mark.parametrize("format_name", ALL_FORMATS)
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["screen_view", "custom_event", "commerce_event", "app_foreground"]),
    name=st.text(max_size=60),
    user_id=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
    attributes=st.dictionaries(st.text(max_size=300), attribute_values, max_size=30),
)
def test_any_event_validates_against_the_schema(
    format_name, make_event, schema_errors, kind, name, user_id, attributes
):
    record = make_event(type=kind, name=name, user_id=user_id, attributes=attributes)
    for output in FORMATS[format_name](record):
        assert schema_errors(format_name, output) == [], output


@pytest.mark.parametrize("format_name", ALL_FORMATS)
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["screen_view", "custom_event", "app_background", "session_attribute"]),
    attributes=st.dictionaries(
        st.sampled_from(["", "$", "$a", "a", "token", "session_id", "k" * 300, "b c"]),
        attribute_values,
        max_size=8,
    ),
)
def test_attributes_in_any_mapping_give_the_output_of_a_dict(
    format_name, make_event, kind, attributes
):
    # Formats read a dict's attributes directly and copy any other mapping: the same output.
    change = {"op": "set", "key": "level", "value": 3}
    as_dict = make_event(type=kind, attribute=change, attributes=attributes)
    as_proxy = make_event(type=kind, attribute=change, attributes=MappingProxyType(attributes))
    assert FORMATS[format_name](as_proxy) == FORMATS[format_name](as_dict)
