"""The partner registry and filters of pipeline/partners/__init__.py."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil

import pytest

import pipeline.partners
from pipeline.partners import FORMATS, Partner, default_partners, partner_records


def format_modules():
    infos = pkgutil.iter_modules(pipeline.partners.__path__)
    return sorted(info.name for info in infos if not info.name.startswith("_"))


def test_formats_holds_exactly_the_discovered_modules():
    assert list(FORMATS) == format_modules()
    for name in format_modules():
        module = importlib.import_module(f"pipeline.partners.{name}")
        assert name == module.FORMAT
        assert FORMATS[name] is module.translate


def test_formats_include_the_spec_partners():
    assert {"canonical", "amplitude", "ga4", "mixpanel", "braze"} <= set(FORMATS)


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_each_format_has_a_schema_and_a_golden_file(format_name, schema_dir, golden_dir):
    assert (schema_dir / f"{format_name}.schema.json").is_file()
    assert (golden_dir / f"{format_name}.jsonl").is_file()


def test_default_partners_are_one_per_format_on_their_own_topic():
    partners = default_partners()
    assert [partner.format for partner in partners] == list(FORMATS)
    assert [partner.name for partner in partners] == list(FORMATS)
    assert [partner.topic for partner in partners] == [f"partner.{name}" for name in FORMATS]
    assert all(partner.sessions and partner.event_types is None for partner in partners)


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format 'segment'"):
        Partner(name="seg", format="segment", topic="partner.seg")


def partner(**fields):
    settings = {"name": "lake", "format": "canonical", "topic": "partner.lake"} | fields
    return Partner(**settings)


def test_without_filters_a_partner_gets_its_format_output(canonical_input):
    for record in canonical_input:
        assert partner_records(partner(format="amplitude"), record) == FORMATS["amplitude"](record)


def test_event_types_keep_only_those_events_and_all_session_records(
    make_event, make_session_start, make_session_end
):
    screens_only = partner(event_types=frozenset({"screen_view"}))
    assert partner_records(screens_only, make_event(type="screen_view")) != []
    assert partner_records(screens_only, make_event(type="custom_event")) == []
    assert partner_records(screens_only, make_event(type="app_background")) == []
    assert partner_records(screens_only, make_session_start()) != []
    assert partner_records(screens_only, make_session_end()) != []


def test_sessions_off_drops_session_records_but_keeps_events(
    make_event, make_session_start, make_session_end
):
    events_only = partner(sessions=False)
    assert partner_records(events_only, make_session_start()) == []
    assert partner_records(events_only, make_session_end()) == []
    assert partner_records(events_only, make_event()) == [make_event()]


def test_allowlist_keeps_only_allowed_event_attributes(make_event):
    allow_color = partner(attributes_allowlist=frozenset({"color"}))
    record = make_event(attributes={"color": "red", "email": "a@b.c", "size": 2})
    [output] = partner_records(allow_color, record)
    assert output["attributes"] == {"color": "red"}
    assert output["event_id"] == record["event_id"]


def test_allowlist_keeps_only_allowed_session_attributes(make_session_end):
    allow_plan = partner(attributes_allowlist=frozenset({"plan"}))
    [output] = partner_records(allow_plan, make_session_end(attributes={"plan": "pro", "pin": 1}))
    assert output["attributes"] == {"plan": "pro"}


def test_allowlist_drops_session_attribute_events_of_other_keys(make_event):
    allow_plan = partner(attributes_allowlist=frozenset({"plan"}))
    change = {"op": "set", "key": "pin", "value": "1234"}
    allowed = {"op": "set", "key": "plan", "value": "pro"}
    assert partner_records(allow_plan, make_event(type="session_attribute", attribute=change)) == []
    assert partner_records(allow_plan, make_event(type="session_attribute", attribute=allowed))


def test_allowlist_applies_before_the_format(make_event):
    amplitude = partner(format="amplitude", attributes_allowlist=frozenset({"color"}))
    [output] = partner_records(amplitude, make_event(attributes={"color": "red", "email": "x"}))
    assert output["event_properties"] == {"color": "red"}


def test_filters_never_change_the_input_record(canonical_input):
    partners = [
        partner(attributes_allowlist=frozenset({"plan", "source"})),
        partner(attributes_allowlist=frozenset()),
        partner(sessions=False, event_types=frozenset({"custom_event"})),
        *default_partners(),
    ]
    records = copy.deepcopy(canonical_input)
    for configured in partners:
        for record in records:
            partner_records(configured, record)
    assert records == canonical_input


def test_record_without_dropped_attributes_is_passed_as_it_is(make_event):
    record = make_event(attributes={"color": "red"})
    [output] = partner_records(partner(attributes_allowlist=frozenset({"color"})), record)
    assert output == record


def test_a_partner_changed_with_replace_applies_its_new_filters(make_session_start):
    unfiltered = partner(format="amplitude")
    events_only = dataclasses.replace(unfiltered, sessions=False)
    assert partner_records(unfiltered, make_session_start()) != []
    assert partner_records(events_only, make_session_start()) == []
    assert unfiltered == partner(format="amplitude")
