"""The one-message step: parse, apply each event, and say what was rejected and why."""

from __future__ import annotations

import orjson

from pipeline.engine import Applied, Record
from pipeline.input import Limits
from pipeline.processing.step import MessageStep
from pipeline.testing import T0, batch, event, launch, screen_view


class Recorder:
    """An `apply_event` that applies everything but device "other"'s events and refusals."""

    def __init__(self) -> None:
        self.applied: list[Record] = []

    def apply(self, body: Record) -> Applied | None:
        if body["device_id"] == "other":
            return None
        if body["type"] == "session_attribute":
            return Applied.ATTRIBUTE_NOT_NUMERIC
        if body["event_id"] == "dup":
            return Applied.DUPLICATE
        self.applied.append(body)
        return Applied.APPLIED


def run(message: Record | bytes) -> tuple[MessageStep, Recorder, list[str]]:
    recorder = Recorder()
    step = MessageStep(recorder.apply, 1000)
    value = message if isinstance(message, bytes) else orjson.dumps(message)
    rejections = step.run(value, T0, Limits())
    return step, recorder, [r.reason for r in rejections]


def test_every_valid_event_is_applied_in_order() -> None:
    first, second = launch("d1", T0), screen_view("d1", T0 + 1)
    _, recorder, reasons = run(batch(first, second))
    assert [e["event_id"] for e in recorder.applied] == [first["event_id"], second["event_id"]]
    assert reasons == []


def test_a_message_that_is_not_json_is_rejected_whole() -> None:
    _, recorder, reasons = run(b"{nope")
    assert (recorder.applied, reasons) == ([], ["malformed_json"])


def test_an_invalid_event_of_a_batch_is_rejected_and_the_others_applied() -> None:
    good = launch("d1", T0)
    _, recorder, reasons = run(batch(good, {"event_id": "x", "type": "app_launch"}))
    assert [e["event_id"] for e in recorder.applied] == [good["event_id"]]
    assert reasons == ["invalid_event"]


def test_a_refusal_of_the_rules_is_a_rejection_at_its_batch_position() -> None:
    recorder = Recorder()
    step = MessageStep(recorder.apply, 1000)
    refused = event(
        "session_attribute", "d1", T0, attribute={"op": "increment", "key": "n", "value": 1}
    )
    message = orjson.dumps(batch(launch("d1", T0), refused))
    (rejection,) = step.run(message, T0, Limits())
    assert (rejection.reason, rejection.index) == ("attribute_not_numeric", 1)
    dead = step.dead_letter(rejection, message, {"line": 7})
    assert (dead["type"], dead["line"], dead["index"]) == ("dead_letter", 7, 1)
    assert orjson.loads(dead["payload"])["event_id"] == refused["event_id"]


def test_events_not_applied_here_are_kept_with_their_positions() -> None:
    step, _, _ = run(batch(launch("d1", T0), launch("other", T0)))
    assert [e["device_id"] for e in step.elsewhere] == ["other"]
    assert step.elsewhere_indices == [1]


def test_forwarded_events_name_the_positions_of_their_original_batch() -> None:
    recorder = Recorder()
    step = MessageStep(recorder.apply, 1000)
    refused = event(
        "session_attribute", "d1", T0, attribute={"op": "increment", "key": "n", "value": 1}
    )
    message = orjson.dumps(batch(launch("d1", T0), refused))
    (rejection,) = step.run(message, T0, Limits(), forwarded_indices=[4, 9])
    assert rejection.index == 9


def test_verdicts_other_than_applied_are_counted() -> None:
    step, _, _ = run(batch(launch("d1", T0), launch("d1", T0, event_id="dup")))
    assert step.verdicts == {Applied.DUPLICATE: 1}
