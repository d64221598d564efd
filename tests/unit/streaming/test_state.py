"""Device state at population scale, without a broker: the table's value is the one full copy
(a bounded number of decoded devices kept past a commit), and devices quiet for
`device_ttl_days` with no session open leave the table with a tombstone."""

from __future__ import annotations

import pytest

from pipeline.streaming import core as core_module
from pipeline.streaming.codec import DeviceEntry, has_open_session, stored_partition, table_key
from pipeline.streaming.core import DAY_MS
from pipeline.testing import SECOND, T0, background, launch, screen_view, terminate, types
from tests.unit.streaming.test_core import GRACE, TIMEOUT, Stream, backgrounded, device_on

TTL_DAYS = 2
TTL = TTL_DAYS * DAY_MS


# One copy: decoded devices are a bounded cache over the table's values


def test_at_most_cached_devices_stay_decoded_after_a_commit_the_most_recently_changed() -> None:
    stream = Stream(cached_devices=2)
    for n in range(5):
        stream.send(launch(f"d{n}", T0 + n), arrival=T0 + n)
    stream.commit()
    assert list(stream.core.devices) == [table_key("a1", "d3"), table_key("a1", "d4")]
    assert len(stream.stored) == 5


def test_with_no_cache_a_device_goes_on_from_its_table_value() -> None:
    stream = Stream(cached_devices=0)
    stream.send(launch("d1", T0))
    stream.commit()
    assert stream.core.devices == {}
    stream.send(screen_view("d1", T0 + SECOND))
    first, second = stream.enriched()
    assert second["session_id"] == first["session_id"]
    assert second["session_seq"] == first["session_seq"] + 1
    (start,) = stream.sessions()  # no second session_start
    assert start["type"] == "session_start"


def test_an_uncached_device_expires_at_its_deadline_decoded_from_the_table() -> None:
    stream = Stream(cached_devices=0)
    backgrounded(stream)
    stream.commit()
    assert stream.core.devices == {}
    stream.core.clocks[0].caught_up = True
    stream.clock.now_ms = T0 + TIMEOUT + GRACE - 1
    stream.core.expire(0)
    assert types(stream.sessions()) == ["session_start"]
    stream.clock.now_ms = T0 + TIMEOUT + GRACE
    stream.core.expire(0)
    assert types(stream.sessions()) == ["session_start", "session_end"]
    assert stream.sessions()[-1]["end_reason"] == "timeout"


def test_a_rollback_decodes_uncached_devices_again_from_the_table() -> None:
    stream = Stream(cached_devices=0)
    stream.send(launch("d1", T0))
    stream.commit()
    committed = stream.stored[table_key("a1", "d1")]
    stream.send(background("d1", T0 + SECOND))
    stream.core.rollback()
    assert list(stream.core.changes()) == []
    stream.send(background("d1", T0 + SECOND))  # read again after the rollback
    ((_, _, value),) = stream.core.changes()
    assert value != committed
    assert DeviceEntry.from_value(committed, table_key("a1", "d1")).states[0].open is not None


def test_assign_decodes_only_devices_with_a_session_open() -> None:
    writer = Stream(2)
    open_here, closed_here = device_on(0, 2, "o"), device_on(0, 2, "c")
    backgrounded(writer, open_here, 0)
    writer.send(launch(closed_here, T0), terminate(closed_here, T0 + 1))
    writer.commit()
    stream = Stream(2, stored=writer.stored)
    assert table_key("a1", open_here) in stream.core.index
    assert table_key("a1", closed_here) not in stream.core.index
    assert stream.core.devices == {}


def test_a_table_value_tells_its_partition_and_whether_a_session_is_open() -> None:
    stream = Stream(4)
    device = device_on(3, 4)
    stream.send(launch(device, T0), partition=3)
    stream.commit()
    value = stream.stored[table_key("a1", device)]
    assert stored_partition(value) == 3
    assert has_open_session(value)
    stream.send(terminate(device, T0 + 1), partition=3)
    stream.commit()
    value = stream.stored[table_key("a1", device)]
    assert not has_open_session(value)
    assert stored_partition(value) == 3


def test_an_attribute_named_open_is_no_open_session_once_it_ended() -> None:
    stream = Stream()
    stream.send(launch("d1", T0, attributes={"open": {"x": 1}}), terminate("d1", T0 + 1))
    stream.commit()
    assert not has_open_session(stream.stored[table_key("a1", "d1")])


# Eviction


def quiet_device(stream: Stream, device_id: str = "d1") -> None:
    """A session launched and terminated at T0 (nothing open), committed."""
    stream.send(launch(device_id, T0), terminate(device_id, T0 + 1), arrival=T0)
    stream.commit()


def at(stream: Stream, clock_ms: int) -> None:
    """Every partition caught up, at `clock_ms`; a new sweep may start."""
    for partition in range(stream.core.partitions):
        stream.core.clocks[partition].caught_up = True
    stream.clock.now_ms = clock_ms
    stream.core._sweep_after_ms = 0


def test_a_quiet_device_is_not_evicted_one_ms_before_its_time_to_live() -> None:
    stream = Stream(device_ttl_days=TTL_DAYS)
    quiet_device(stream)
    at(stream, T0 + TTL - 1)
    assert stream.core.evict() == 0
    assert list(stream.core.changes()) == []


def test_a_quiet_device_leaves_the_table_with_a_tombstone_at_its_time_to_live() -> None:
    stream = Stream(device_ttl_days=TTL_DAYS)
    quiet_device(stream)
    at(stream, T0 + TTL)
    assert stream.core.evict() == 1
    key = table_key("a1", "d1")
    assert list(stream.core.changes()) == [(key, 0, None)]
    stream.commit()
    assert key not in stream.stored
    assert key not in stream.core.devices


def test_a_device_with_a_session_open_is_never_evicted() -> None:
    stream = Stream(device_ttl_days=TTL_DAYS)
    stream.send(launch("d1", T0))  # foreground: its session stays open until the idle timeout
    stream.commit()
    at(stream, T0 + 10 * TTL)
    assert stream.core.evict() == 0


def test_time_to_live_is_counted_from_the_last_message_of_the_device() -> None:
    stream = Stream(device_ttl_days=TTL_DAYS)
    quiet_device(stream)
    later = T0 + DAY_MS
    stream.clock.now_ms = later
    stream.send(launch("d1", later), terminate("d1", later + 1), arrival=later)
    stream.commit()
    at(stream, T0 + TTL)
    assert stream.core.evict() == 0
    at(stream, later + TTL)
    assert stream.core.evict() == 1


def test_an_evicted_device_that_returns_starts_its_session_numbering_again() -> None:
    stream = Stream(device_ttl_days=TTL_DAYS)
    quiet_device(stream)
    at(stream, T0 + TTL)
    stream.core.evict()
    stream.commit()
    back = T0 + TTL + SECOND
    stream.send(launch("d1", back), arrival=back)
    starts = [s for s in stream.sessions() if s["type"] == "session_start"]
    assert [s["session_number"] for s in starts] == [1, 1]


def test_a_device_back_before_its_eviction_is_committed_starts_again_and_writes_no_tombstone() -> (
    None
):
    stream = Stream(device_ttl_days=TTL_DAYS)
    quiet_device(stream)
    at(stream, T0 + TTL)
    stream.core.evict()
    back = T0 + TTL + SECOND
    stream.send(launch("d1", back), arrival=back)
    ((key, _, value),) = stream.core.changes()
    assert key == table_key("a1", "d1") and value is not None
    assert DeviceEntry.from_value(value, key).states[0].session_count == 1


def test_a_rollback_forgets_evictions_not_committed() -> None:
    stream = Stream(device_ttl_days=TTL_DAYS)
    quiet_device(stream)
    at(stream, T0 + TTL)
    stream.core.evict()
    stream.core.rollback()
    assert list(stream.core.changes()) == []
    assert table_key("a1", "d1") in stream.stored


def test_a_ttl_of_zero_keeps_devices_for_ever() -> None:
    stream = Stream(device_ttl_days=0)
    quiet_device(stream)
    at(stream, T0 + 10_000 * DAY_MS)
    assert stream.core.evict() == 0


def test_a_sweep_looks_at_its_budget_of_devices_per_call_and_each_device_once() -> None:
    stream = Stream(device_ttl_days=TTL_DAYS)
    for n in range(5):
        quiet_device(stream, f"d{n}")
    at(stream, T0 + TTL)
    assert [stream.core.evict(budget=2) for _ in range(4)] == [2, 2, 1, 0]
    assert len(list(stream.core.changes())) == 5


def test_devices_of_partitions_this_worker_does_not_own_are_left_alone() -> None:
    stream = Stream(2, device_ttl_days=TTL_DAYS)
    other = device_on(1, 2)
    stream.send(launch(other, T0), terminate(other, T0 + 1), partition=1)
    stream.commit()
    stream.core.reindex(frozenset({0}))
    at(stream, T0 + TTL)
    assert stream.core.evict() == 0


# What the worker holds, for its metrics


def test_devices_held_and_open_sessions_count_the_table_as_committed() -> None:
    stream = Stream(2, cached_devices=0, device_ttl_days=TTL_DAYS)
    here, there = device_on(0, 2, "h"), device_on(1, 2, "t")
    stream.send(launch(here, T0), partition=0)
    stream.send(launch(there, T0), terminate(there, T0 + 1), partition=1)
    assert stream.core.devices_held == 0  # nothing committed yet
    stream.commit()
    assert (stream.core.devices_held, stream.core.open_sessions) == (2, 1)
    stream.send(screen_view(here, T0 + 2), partition=0)  # not new: no second count
    stream.commit()
    assert stream.core.devices_held == 2
    at(stream, T0 + TTL)
    assert stream.core.evict() == 1  # `there`: no session open
    stream.commit()
    assert stream.core.devices_held == 1
    stream.core.reindex(frozenset({1}))
    assert (stream.core.devices_held, stream.core.open_sessions) == (0, 0)
    stream.core.reindex(frozenset({0, 1}))
    assert (stream.core.devices_held, stream.core.open_sessions) == (1, 1)


def test_a_rollback_forgets_devices_new_since_the_commit() -> None:
    stream = Stream()
    stream.send(launch("d1", T0))
    stream.core.rollback()
    stream.commit()
    assert stream.core.devices_held == 0


def test_values_of_earlier_versions_plain_json_are_booked_too() -> None:
    writer = Stream()
    backgrounded(writer)
    writer.commit()
    key = table_key("a1", "d1")
    legacy = {key: DeviceEntry.from_value(writer.stored[key], key).to_json()}
    stream = Stream(stored=legacy)
    assert key in stream.core.index and stream.core.devices_held == 1
    stream.core.clocks[0].caught_up = True
    stream.clock.now_ms = T0 + TIMEOUT + GRACE - 1
    stream.core.expire(0)
    assert stream.sessions() == []
    stream.clock.now_ms = T0 + TIMEOUT + GRACE
    stream.core.expire(0)
    assert types(stream.sessions()) == ["session_end"]


def test_reindexing_lets_others_run_every_slice_and_ends_as_assign_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(core_module, "ASSIGN_SLICE", 2)
    writer = Stream()
    for n in range(5):
        backgrounded(writer, f"d{n}")
    writer.commit()
    stream = Stream(stored=writer.stored)
    stream.core.reindex(frozenset())
    steps = list(stream.core.reindexing(frozenset({0})))
    assert len(steps) == 2  # after values 2 and 4 of 5
    assert stream.core.indexed == frozenset({0})
    assert (len(stream.core.index), stream.core.devices_held) == (5, 5)
