"""Expiry in arrival time: when a device is due, what device time a clock stands for, the
partition clocks and the deadline index."""

from __future__ import annotations

from pipeline.streaming.expiry import (
    STALE_MARGIN,
    DeadlineIndex,
    PartitionClock,
    device_now,
    due_at,
)
from pipeline.testing import SECOND, T0

GRACE = 2 * SECOND


def test_a_device_is_due_its_remaining_time_plus_grace_after_its_last_arrival() -> None:
    # Last event at T0 arrived at T0 + 1 s; its session's deadline is 60 s of event time later.
    assert due_at(T0 + SECOND, T0, T0 + 60 * SECOND, GRACE) == T0 + 63 * SECOND


def test_a_deadline_already_past_in_event_time_is_due_after_the_grace_alone() -> None:
    assert due_at(T0, T0 + 90 * SECOND, T0 + 60 * SECOND, GRACE) == T0 + GRACE


def test_device_time_stands_still_until_the_grace_has_passed() -> None:
    assert device_now(T0, T0 - 5 * SECOND, T0 + GRACE, GRACE) == T0 - 5 * SECOND
    assert device_now(T0, T0 - 5 * SECOND, T0, GRACE) == T0 - 5 * SECOND


def test_device_time_moves_with_the_clock_after_the_grace() -> None:
    assert device_now(T0, T0 - 5 * SECOND, T0 + GRACE + 7, GRACE) == T0 - 5 * SECOND + 7


def test_device_now_inverts_due_at() -> None:
    arrival, latest, deadline = T0 + 3, T0 - 100, T0 + 60 * SECOND
    due = due_at(arrival, latest, deadline, GRACE)
    assert device_now(arrival, latest, due, GRACE) == deadline


def test_a_partition_clock_is_its_newest_timestamp_while_replaying() -> None:
    clock = PartitionClock()
    clock.observe(T0 + 10)
    clock.observe(T0)  # older: the clock never goes back
    assert clock.now(wall_ms=T0 + 1000) == T0 + 10


def test_a_caught_up_partition_clock_follows_the_wall_clock() -> None:
    clock = PartitionClock(newest_ms=T0, caught_up=True)
    assert clock.now(wall_ms=T0 + 1000) == T0 + 1000
    assert clock.now(wall_ms=T0 - 1000) == T0  # a wall clock behind the records: the records


def test_the_index_hands_out_devices_due_by_the_clock_soonest_first() -> None:
    index = DeadlineIndex()
    index.schedule(0, b"late", T0 + 20)
    index.schedule(0, b"soon", T0 + 10)
    assert index.pop_due(0, T0 + 9) == []
    assert index.pop_due(0, T0 + 20) == [b"soon", b"late"]
    assert len(index) == 0


def test_a_device_is_due_at_its_exact_time() -> None:
    index = DeadlineIndex()
    index.schedule(0, b"d", T0)
    assert index.pop_due(0, T0 - 1) == []
    assert index.pop_due(0, T0) == [b"d"]


def test_an_earlier_booking_wins_and_a_later_one_is_ignored() -> None:
    index = DeadlineIndex()
    index.schedule(0, b"d", T0 + 10)
    index.schedule(0, b"d", T0 + 50)  # later: the earlier look reschedules if need be
    index.schedule(0, b"d", T0 + 5)  # earlier: replaces the booking
    assert index.pop_due(0, T0 + 5) == [b"d"]
    assert index.pop_due(0, T0 + 100) == []  # the stale heap entry is skipped


def test_partitions_are_indexed_apart_and_dropped_whole() -> None:
    index = DeadlineIndex()
    index.schedule(0, b"a", T0)
    index.schedule(1, b"b", T0)
    index.drop_partition(1)
    assert len(index) == 1
    assert index.pop_due(1, T0) == []
    assert index.pop_due(0, T0) == [b"a"]


def test_a_cancelled_booking_is_not_handed_out() -> None:
    index = DeadlineIndex()
    index.schedule(0, b"a", T0)
    index.schedule(0, b"b", T0)
    index.cancel(b"a")
    assert b"a" not in index and len(index) == 1
    assert index.pop_due(0, T0) == [b"b"]


def test_a_device_booked_again_after_a_cancel_is_handed_out_once() -> None:
    index = DeadlineIndex()
    index.schedule(0, b"a", T0)
    index.cancel(b"a")
    index.schedule(0, b"a", T0)
    assert index.pop_due(0, T0) == [b"a"]
    assert index.pop_due(0, T0 + 1) == []


def test_stale_bookings_are_dropped_once_they_outnumber_the_live_ones() -> None:
    index = DeadlineIndex()
    live = [f"live{n}".encode() for n in range(100)]
    for key in live:
        index.schedule(0, key, T0 + 10)
    for n in range(50_000):  # sessions that closed before their deadline came
        key = f"gone{n}".encode()
        index.schedule(n % 3, key, T0 + n)
        index.cancel(key)
    assert len(index) == 100
    assert index.entries <= 2 * len(index) + STALE_MARGIN
    assert index.pop_due(0, T0 + 10) == sorted(live)
    assert [index.pop_due(p, T0 + 100_000) for p in range(3)] == [[], [], []]


def test_rebooking_earlier_again_and_again_keeps_the_index_bounded() -> None:
    index = DeadlineIndex()
    for n in range(50_000):
        index.schedule(0, b"a", T0 + 100_000 - n)
    assert index.entries <= 2 + STALE_MARGIN
    assert index.pop_due(0, T0 + 100_000) == [b"a"]
