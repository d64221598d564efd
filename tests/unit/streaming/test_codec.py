"""The table's codec: device states and table entries written to the changelog and read back."""

from __future__ import annotations

import gc
import os
from typing import Any

import orjson

from pipeline.engine import Applied, DeviceState, SessionConfig, SessionRules
from pipeline.streaming.codec import DeviceEntry, state_from_json, state_to_json, table_key
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
    assert DeviceEntry.from_json(entry.to_json(), table_key("a1", "d1")) == entry


def test_a_table_value_leaves_the_ids_of_its_key_out_and_a_value_with_them_is_read_too() -> None:
    key = table_key("a1", "d1")
    states = [run(SessionRules(SessionConfig()), launch(ts=T0)) for _ in range(2)]
    entry = DeviceEntry(states, partition=1, arrival_ms=T0, latest_ts=T0)
    value = entry.to_json()
    assert b'"app_id"' not in value and b'"device_id"' not in value
    assert DeviceEntry.from_json(value, key) == entry
    with_ids = orjson.dumps(
        {
            "partition": 1,
            "arrival_ms": T0,
            "latest_ts": T0,
            "states": [orjson.Fragment(state_to_json(s)) for s in states],
        }
    )
    assert DeviceEntry.from_json(with_ids, key) == entry


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
        (table_key("a1", f"d{n}"), DeviceEntry([DeviceState("a1", f"d{n}")], 0).to_json())
        for n in range(count)
    ]
    gc.collect()
    per_device = (_resident_bytes() - before) / count
    assert per_device < 1024, f"{per_device:.0f} bytes per key and value"
    assert len(kept) == count
