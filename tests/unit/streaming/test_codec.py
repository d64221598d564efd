"""The table's codec: device states and table entries written to the changelog and read back."""

from __future__ import annotations

import gc
import os
import uuid
from typing import Any

import orjson
import pytest

from pipeline.engine import Applied, DeviceState, SessionConfig, SessionRules
from pipeline.streaming.codec import (
    VALUE_FORMAT,
    DeviceEntry,
    Header,
    has_open_session,
    state_from_json,
    state_to_json,
    stored_head,
    stored_header,
    table_key,
)
from pipeline.testing import T0, background, event, launch, terminate


def run(rules: SessionRules, *events: dict[str, Any]) -> DeviceState:
    state = DeviceState("a1", "d1")
    for body in events:
        rules.apply(state, body, [])
    return state


def test_duplicate_memory_survives_the_changelog_codec() -> None:
    rules = SessionRules(SessionConfig(dedup_max_ids=100))
    first = launch(ts=T0)
    state = run(rules, first, terminate(ts=T0 + 1), launch(ts=T0 + 10), terminate(ts=T0 + 11))
    restored = state_from_json(state_to_json(state))
    assert restored == state
    assert rules.apply(restored, dict(first), []) == Applied.DUPLICATE


def test_states_written_before_the_duplicate_window_still_load() -> None:
    old = (
        b'{"app_id":"a1","device_id":"d1","session_count":1,"open":null,"last_closed":'
        b'{"session_id":"s","start_ts":1,"duration_ms":2,"event_ids":["e1"]}}'
    )
    state = state_from_json(old)
    assert state.last_closed is not None and list(state.last_closed.event_ids) == ["e1"]
    assert (state.earlier, state.latest_ts) == ([], 0)


def test_state_round_trips_through_json() -> None:
    state = run(
        SessionRules(SessionConfig()),
        launch(ts=T0, user_id="u"),
        event("session_attribute", ts=T0 + 1, attribute={"op": "set", "key": "k", "value": 1}),
        background(ts=T0 + 2),
    )
    restored = state_from_json(state_to_json(state))
    assert restored == state


def test_a_table_entry_round_trips_with_its_partition_and_arrival() -> None:
    state = run(SessionRules(SessionConfig()), launch(ts=T0))
    entry = DeviceEntry([state], partition=2, arrival_ms=T0 + 5, latest_ts=T0)
    assert DeviceEntry.from_value(entry.to_value(None), table_key("a1", "d1")) == entry


def test_a_table_value_leaves_the_ids_of_its_key_out_and_a_value_with_them_is_read_too() -> None:
    key = table_key("a1", "d1")
    states = [run(SessionRules(SessionConfig()), launch(ts=T0)) for _ in range(2)]
    entry = DeviceEntry(states, partition=1, arrival_ms=T0, latest_ts=T0)
    value = entry.to_json()
    assert b'"app_id"' not in value and b'"device_id"' not in value
    assert DeviceEntry.from_value(value, key) == entry
    with_ids = orjson.dumps(
        {
            "partition": 1,
            "arrival_ms": T0,
            "latest_ts": T0,
            "states": [orjson.Fragment(state_to_json(s)) for s in states],
        }
    )
    assert DeviceEntry.from_value(with_ids, key) == entry


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_kept_keys_and_values_take_no_more_memory_than_their_bytes() -> None:
    # The table holds a key and a value per device for the device's life: orjson keeps a ~4 KB
    # buffer behind each of its results, which at a million devices is gigabytes.
    count = 20_000
    gc.collect()
    before = _resident_bytes()
    kept = [
        (table_key("a1", f"d{n}"), DeviceEntry([DeviceState("a1", f"d{n}")], 0).to_value(None))
        for n in range(count)
    ]
    gc.collect()
    per_device = (_resident_bytes() - before) / count
    assert per_device < 1024, f"{per_device:.0f} bytes per key and value"
    assert len(kept) == count


def typical_entry(open_session: bool) -> DeviceEntry:
    """A device with UUID ids: a session of eight events, open or ended."""
    rules = SessionRules(SessionConfig())
    device = "26311977-baf4-4704-a261-7d819834b490"
    events = [
        event("screen_view", device, T0 + n, event_id=str(uuid.UUID(int=n + 1))) for n in range(8)
    ]
    events[0]["type"] = "app_launch"
    if not open_session:
        events[-1]["type"] = "app_terminate"
    state = run(rules, *events)
    return DeviceEntry([state], partition=3, arrival_ms=T0 + 9, latest_ts=T0 + 7)


@pytest.mark.parametrize("open_session", [True, False])
def test_a_table_value_is_compressed_and_its_header_tells_what_booking_it_needs(
    open_session: bool,
) -> None:
    entry = typical_entry(open_session)
    deadline = SessionRules(SessionConfig()).deadline(entry.states[0])
    assert (deadline is not None) is open_session
    value = entry.to_value(deadline)
    assert len(value) < 0.6 * len(entry.to_json())
    assert stored_header(value) == Header(3, T0 + 9, T0 + 7, deadline)
    assert stored_head(value) == (3, T0 + 9)
    assert has_open_session(value) is open_session
    assert DeviceEntry.from_value(value, table_key("a1", entry.states[0].device_id)) == entry


@pytest.mark.parametrize("open_session", [True, False])
def test_plain_json_values_of_earlier_versions_tell_the_same(open_session: bool) -> None:
    entry = typical_entry(open_session)
    legacy = entry.to_json()
    assert stored_head(legacy) == (3, T0 + 9)
    assert has_open_session(legacy) is open_session
    assert stored_header(legacy) is None  # (its deadline is found by decoding it)


def test_a_value_of_an_unknown_format_is_refused_not_misread() -> None:
    value = bytes([VALUE_FORMAT + 1]) + typical_entry(True).to_value(T0)[1:]
    with pytest.raises(ValueError, match="format 2"):
        DeviceEntry.from_value(value, table_key("a1", "d1"))
    with pytest.raises(ValueError, match="format 2"):
        stored_head(value)
