"""Routing a batch of outputs: each record serialized once, to the sessions or enriched output,
whole to verbatim partners, formatted records to the others."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.engine import SessionConfig
from pipeline.partners import Partner
from pipeline.processing.processor import Outputs, Processor
from pipeline.processing.routing import json_lines, route, values
from pipeline.testing import T0, launch, screen_view, terminate, types

MIRROR = Partner(name="mirror", format="canonical", topic="partner.mirror")
AMPLITUDE = Partner(name="amp", format="amplitude", topic="partner.amp")


def outputs(*partners: Partner) -> Outputs:
    processor = Processor(SessionConfig(), partners)
    out = processor.new_outputs()
    states = processor.new_states("a1", "d1")
    for body in (launch("d1", T0), screen_view("d1", T0 + 1), terminate("d1", T0 + 2)):
        processor.apply(states, body, out)
    return out


def test_session_records_go_to_sessions_and_the_rest_to_enriched_in_order() -> None:
    routed = route(outputs(), orjson.dumps)
    assert types(map(orjson.loads, routed.sessions())) == ["session_start", "session_end"]
    assert types(map(orjson.loads, routed.enriched())) == [
        "app_launch",
        "screen_view",
        "app_terminate",
    ]
    assert types(routed.session_records()) == ["session_start", "session_end"]


def test_every_record_is_serialized_once_for_every_output() -> None:
    out = outputs(MIRROR)
    routed = route(out, orjson.dumps)
    assert routed.lines == [orjson.dumps(r) for r in out.pipeline_records]
    assert out.verbatim == ("mirror",)
    assert list(routed.formatted()) == []


def test_a_formatted_partner_gets_its_own_records_serialized() -> None:
    out = outputs(AMPLITUDE)
    routed = route(out, orjson.dumps)
    ((name, records),) = routed.formatted()
    assert (name, records) == ("amp", out.partners["amp"])
    assert values(records) == [orjson.dumps(r) for r in records]
    assert json_lines(records) == b"".join(orjson.dumps(r) + b"\n" for r in records)


@pytest.mark.parametrize(
    "records",
    [
        [],
        [{}],
        [{"a": 1}, {}, {"b": [1, {"c": 2}]}],
        [{"name": "},{"}, {"x": "}, {"}],  # the separator inside strings
        [{"nested": [{"a": 1}, {"b": 2}]}, {"n": {"m": {}}}],
        [{"text": "line\nbreak", "u": "é"}],
    ],
)
def test_values_and_json_lines_are_each_records_own_dumps(records: list[dict[str, Any]]) -> None:
    assert values(records) == [orjson.dumps(r) for r in records]
    assert json_lines(records) == b"".join(orjson.dumps(r) + b"\n" for r in records)
