"""When streaming sessions expire with no new events: partition clocks and a deadline index.

A session's deadline is in device time (SPEC section 3), but a quiet device sends nothing that
would move device time on. So the worker measures how long a device has been quiet in *arrival*
time: the Kafka timestamps of the messages it consumed. A device is due when

    clock(partition) >= arrival of its last message + (deadline - its latest event time) + grace

where the partition clock is the newest Kafka timestamp consumed there, and also the wall clock
once the partition is caught up (nothing left to read). While a backlog is being replayed the
clock follows the backlog, so the wall clock never expires a session early; once live, a quiet
backgrounded session closes `timeout + grace` after its background event arrived.

The index is a heap per partition with lazy deletion: checking costs O(log n) per due device,
not a scan of every open session. Bookings of devices that closed, or were booked earlier
again, stay in the heaps until due; once they outnumber the live ones (plus a margin), the heaps
are rebuilt without them, so the index stays the size of the open sessions (amortized O(1)).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


def due_at(arrival_ms: int, latest_ts: int, deadline_ts: int, grace_ms: int) -> int:
    """Arrival-clock time at which a device whose deadline is `deadline_ts` is due."""
    return arrival_ms + max(0, deadline_ts - latest_ts) + grace_ms


def device_now(arrival_ms: int, latest_ts: int, clock_ms: int, grace_ms: int) -> int:
    """The device time that partition clock `clock_ms` stands for (inverse of `due_at`)."""
    return latest_ts + max(0, clock_ms - arrival_ms - grace_ms)


@dataclass(slots=True)
class PartitionClock:
    """Arrival time of one partition: newest Kafka timestamp seen, wall clock when caught up."""

    newest_ms: int = 0
    caught_up: bool = False

    def observe(self, timestamp_ms: int) -> None:
        """A message with Kafka timestamp `timestamp_ms` was consumed."""
        if timestamp_ms > self.newest_ms:
            self.newest_ms = timestamp_ms

    def now(self, wall_ms: int) -> int:
        """The partition's arrival clock."""
        return max(self.newest_ms, wall_ms) if self.caught_up else self.newest_ms


# Stale bookings kept before the heaps are rebuilt, beyond as many as there are live ones.
STALE_MARGIN = 4096


@dataclass(slots=True)
class DeadlineIndex:
    """Devices waiting for their deadline, per partition, soonest first."""

    _heaps: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    _scheduled: dict[bytes, int] = field(default_factory=dict)
    _entries: int = 0  # in the heaps, stale ones included

    def schedule(self, partition: int, key: bytes, due_ms: int) -> None:
        """Make sure `key` is looked at no later than `due_ms`."""
        current = self._scheduled.get(key)
        if current is not None and current <= due_ms:
            return  # an earlier look is booked; it reschedules if the device is not due yet
        self._scheduled[key] = due_ms
        heapq.heappush(self._heaps.setdefault(partition, []), (due_ms, key))
        self._entries += 1
        self._compact_if_stale()

    def cancel(self, key: bytes) -> None:
        """Nothing to look at for `key` any more (its session closed)."""
        if self._scheduled.pop(key, None) is not None:
            self._compact_if_stale()

    def _compact_if_stale(self) -> None:
        if self._entries > 2 * len(self._scheduled) + STALE_MARGIN:
            scheduled = self._scheduled
            for partition, heap in self._heaps.items():
                live = [(due, key) for due, key in heap if scheduled.get(key) == due]
                heapq.heapify(live)
                self._heaps[partition] = live
            self._entries = sum(len(heap) for heap in self._heaps.values())

    def pop_due(self, partition: int, clock_ms: int) -> list[bytes]:
        """Keys of `partition` booked at or before `clock_ms`; they are unbooked."""
        heap = self._heaps.get(partition)
        due: list[bytes] = []
        while heap and heap[0][0] <= clock_ms:
            due_ms, key = heapq.heappop(heap)
            self._entries -= 1
            if self._scheduled.get(key) == due_ms:
                del self._scheduled[key]
                due.append(key)
        return due

    def drop_partition(self, partition: int) -> None:
        """Forget a partition (revoked from this worker)."""
        heap = self._heaps.pop(partition, [])
        self._entries -= len(heap)
        for _, key in heap:
            self._scheduled.pop(key, None)

    @property
    def entries(self) -> int:
        """Bookings in the heaps, stale ones included (what the index holds in memory)."""
        return self._entries

    def __len__(self) -> int:
        return len(self._scheduled)

    def __contains__(self, key: object) -> bool:
        return key in self._scheduled
