"""`device_view`: a device's open session, else its last closed one, as the worker holds it."""

from __future__ import annotations

from pipeline.config import Config
from pipeline.engine import SessionConfig
from pipeline.observe.lookup import device_view
from pipeline.streaming.codec import table_key
from pipeline.streaming.core import StreamingCore
from pipeline.testing import (
    T0,
    FakeClock,
    ListSink,
    background,
    event,
    fetched,
    launch,
    terminate,
)

TIMEOUT_S = 60


def core_with(*events: dict[str, object]) -> StreamingCore:
    config = Config(sessions=SessionConfig(session_timeout_s=TIMEOUT_S))
    core = StreamingCore(config, 1, "by-device", FakeClock(T0))
    core.writer.sink = ListSink()
    core.reindex(frozenset({0}))
    records = [fetched(n, e, topic="in") for n, e in enumerate(events)]
    core.apply(("in", 0), records, 0)
    return core


def test_an_open_backgrounded_session_shows_its_deadline_and_attributes() -> None:
    core = core_with(
        launch(event_id="e1"),
        event(
            "session_attribute",
            ts=T0 + 10,
            attribute={"op": "set", "key": "plan", "value": "pro"},
        ),
        background(ts=T0 + 20, event_id="e3"),
    )
    view = device_view(core, "a1", "d1")
    assert view is not None
    session = view["open_session"]
    assert session["state"] == "background"
    assert session["deadline_ts"] == T0 + 20 + TIMEOUT_S * 1000
    assert session["event_count"] == 3
    assert session["attributes"] == {"plan": "pro"}
    assert session["session_number"] == 1
    assert view["last_closed_session"] is None


def test_a_closed_session_is_shown_once_nothing_is_open() -> None:
    core = core_with(launch(event_id="e1"), terminate(ts=T0 + 5000, event_id="e2"))
    view = device_view(core, "a1", "d1")
    assert view is not None
    assert view["open_session"] is None
    closed = view["last_closed_session"]
    assert (closed["session_number"], closed["start_ts"], closed["end_ts"]) == (1, T0, T0 + 5000)


def test_a_device_only_in_the_table_is_read_from_it_and_an_unknown_one_is_none() -> None:
    core = core_with(launch(event_id="e1"))
    key = table_key("a1", "d1")
    core.stored[key] = core.devices.pop(key).to_json()
    view = device_view(core, "a1", "d1")
    assert view is not None and view["open_session"]["state"] == "foreground"
    assert device_view(core, "a1", "nobody") is None
