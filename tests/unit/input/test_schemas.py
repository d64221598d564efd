"""The runtime check is the schema: the compiled validator (jsonschema-rs) agrees with the
reference `jsonschema` implementation on every input it is shown."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.input.schemas import validator
from tests.schema_check import validator as reference_validator

TYPES = [
    "app_launch",
    "app_foreground",
    "app_background",
    "app_terminate",
    "session_attribute",
    "screen_view",
    "custom_event",
    "commerce_event",
    "crash",
]
tricky = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.text(min_size=127, max_size=130),
    st.sampled_from(TYPES),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
attribute = st.one_of(
    tricky,
    st.fixed_dictionaries(
        {"op": st.sampled_from(["set", "increment", "add"]), "key": st.text(max_size=3)},
        optional={"value": tricky, "extra": tricky},
    ),
)
event = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(max_size=4), tricky),
        "app_id": st.one_of(st.text(max_size=4), tricky),
        "device_id": st.one_of(st.text(min_size=255, max_size=258), st.text(max_size=4), tricky),
        "type": st.one_of(st.sampled_from(TYPES), tricky),
        "ts": st.one_of(st.integers(min_value=0, max_value=2**53), tricky),
        "user_id": tricky,
        "name": tricky,
        "attributes": tricky,
        "attribute": attribute,
        "session_timeout_s": st.one_of(st.floats(0, 90000), tricky),
        "unknown_field": tricky,
    },
)


def reference_accepts(name: str, document: Any) -> bool:
    return bool(reference_validator(name).is_valid(document))


def compiled_accepts(name: str, document: Any) -> bool:
    return validator(name).is_valid(document)


@settings(max_examples=500, deadline=None)
@given(event)
def test_compiled_event_check_agrees_with_the_reference(document: dict[str, Any]) -> None:
    assert compiled_accepts("event", document) == reference_accepts("event", document)


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional={"events": tricky, "app_id": tricky, "user_id": tricky}))
def test_compiled_batch_check_agrees_with_the_reference(document: dict[str, Any]) -> None:
    assert compiled_accepts("batch", document) == reference_accepts("batch", document)
