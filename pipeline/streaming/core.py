"""The streaming core: fetched records and a clock in, records to write out. No awaits.

`StreamingCore` holds what a commit needs to know: the devices changed since the last commit
(decoded: `DeviceEntry`, states per profile, partition, arrival), the deadline index and
partition clocks of `pipeline.streaming.expiry`, and the offsets consumed. The one full copy of
every device's state is the table's value (`stored`, bytes); a device is decoded when an event
or its deadline needs it, and at most `[worker] cached_devices` decoded entries are kept past a
commit (the most recently changed). It is fed:

- `apply`: a fetched run of one partition's records (anything with topic, partition, offset,
  key, value, timestamp and headers), each through the one-message step
  (`pipeline.processing.step`); what they emit goes to the sink of `writer`
  (`pipeline.streaming.outputs`), per device as its records come, and events of devices of
  another partition to the repartition topic;
- `expire`: what is due on a partition by its clock (`clock` is the wall clock, injected);
- `evict`: devices quiet for `[worker] device_ttl_days` with no session open leave the table;
- `changes` / `committed`: what a checkpoint writes to the changelog, and that it is written;
- `rollback`: back to the committed table states, after a failed transaction;
- `assign` / `revoke` (`reindex`): partitions gained or lost, devices read from the table.

The async adapter (`pipeline.streaming.worker`) owns the Kafka clients and transactions.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import replace
from itertools import islice
from typing import Any, Protocol

import orjson

from pipeline.config import Config
from pipeline.engine import Applied, Record
from pipeline.kafka.topics import max_message_bytes
from pipeline.processing.processor import Processor
from pipeline.processing.step import MessageStep
from pipeline.streaming.codec import (
    CHECKPOINT_KEY,
    DeviceEntry,
    has_open_session,
    stored_head,
    stored_header,
    stored_partition,
    table_key,
)
from pipeline.streaming.expiry import DeadlineIndex, PartitionClock, device_now, due_at
from pipeline.streaming.outputs import ORIGIN_HEADER, TopicWriter
from pipeline.streaming.partitioning import partition_for
from pipeline.streaming.stores import RocksTable

log = logging.getLogger("sessionize.worker")

TopicPartition = tuple[str, int]
DAY_MS = 86_400_000
# Devices an eviction sweep looks at per call (`evict`): a tick's share of a sweep.
EVICTION_SLICE = 5_000
# Table values `assign` reads between two yields to the event loop.
ASSIGN_SLICE = 20_000
# Between eviction sweeps (a device's time to live is counted in days).
SWEEP_PAUSE_MS = 3_600_000


class FetchedRecord(Protocol):
    """A record read from Kafka (aiokafka's ConsumerRecord is one)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Any  # a sequence of (name, bytes) pairs, or a dict of them


class StreamingCore:
    """Applies fetched records and expiry to the devices of this worker's partitions."""

    def __init__(
        self,
        config: Config,
        partitions: int,
        repartition_topic: str,
        clock: Callable[[], int],
        stored: MutableMapping[bytes, bytes] | None = None,
    ) -> None:
        self.processor = Processor(config.sessions, config.partners)
        self.partitions = partitions
        # The table's committed values (the adapter sets Faust's table data once it exists).
        self.stored: MutableMapping[bytes, bytes] = {} if stored is None else stored
        self.clock = clock
        self.grace_ms = round(config.worker.grace_s * 1000)
        self.limits = config.limits
        # Forwarded events were checked against max_event_bytes as they came in; with what they
        # inherited from their batch they may take up to a record of the repartition topic.
        self.forwarded_limits = replace(config.limits, max_event_bytes=max_message_bytes(config))
        # Decoded devices: every one changed since the last commit, and up to `cache_size`
        # more, the most recently changed last (the table's value is the full copy).
        self.devices: dict[bytes, DeviceEntry] = {}
        self.cache_size = config.worker.cached_devices
        self.ttl_ms = round(config.worker.device_ttl_days * DAY_MS)
        self.evicted: dict[bytes, int] = {}  # key -> partition: tombstones of the next commit
        self.held: dict[int, int] = {}  # partition -> devices the table holds there
        self._new: dict[bytes, int] = {}  # key -> partition: not in the table before
        self._sweep: Iterator[bytes] | None = None  # the keys an eviction sweep has yet to see
        self._sweep_after_ms = 0  # wall clock at which the next sweep may start
        self.index = DeadlineIndex()
        self.clocks: dict[int, PartitionClock] = defaultdict(PartitionClock)
        self.positions: dict[TopicPartition, int] = {}  # next offset after the last applied
        self.indexed: frozenset[int] = frozenset()  # partitions the index holds
        self.dirty: dict[bytes, None] = {}  # devices changed since the last commit, in order
        self.uncommitted: dict[TopicPartition, int] = {}  # offsets to commit with the transaction
        self.uncommitted_messages = 0
        self.committed_clocks: dict[int, int] = {}  # partition clocks at the last commit
        self.out = self.processor.new_outputs()
        self.writer = TopicWriter(config, partitions, repartition_topic, self.out.verbatim)
        self.step = MessageStep(self._apply_event, config.limits.max_dead_letter_payload_bytes)
        # The message being applied: its partition and arrival, which device `out` holds
        # records of (a batch is mostly one device), the devices it changed.
        self._partition = 0
        self._arrival_ms = 0
        self._emitting: str | None = None
        self._touched: dict[bytes, DeviceEntry] = {}

    # Records

    def apply(self, tp: TopicPartition, records: Sequence[FetchedRecord], start: int) -> int:
        """Apply the records of `tp` from offset `start` on, in order (those before were
        applied already: a replay); returns how many were applied."""
        apply = self._apply_message
        applied = 0
        for record in records:
            if record.offset >= start:
                apply(tp, record)
                applied += 1
        self.uncommitted_messages += applied
        return applied

    def _apply_message(self, tp: TopicPartition, record: FetchedRecord) -> None:
        value: bytes = record.value if isinstance(record.value, bytes) else b""
        partition = record.partition
        arrival_ms: int = record.timestamp if record.timestamp else self.clock()
        self.positions[tp] = self.uncommitted[tp] = record.offset + 1
        self.clocks[partition].observe(arrival_ms)
        origin, forwarded_indices = _origin(record)
        limits = self.limits if forwarded_indices is None else self.forwarded_limits
        self._partition = partition
        self._arrival_ms = arrival_ms
        step = self.step
        rejections = step.run(value, self.clock(), limits, forwarded_indices)
        writer = self.writer
        if self._emitting is not None:
            writer.send_outputs(self.out, self._emitting)
            self._emitting = None
        touched = self._touched
        if touched:
            for device_key, device in touched.items():
                self._schedule(device_key, device)  # once per device and message
            touched.clear()
        if step.elsewhere:
            forwarded = writer.forward(
                step.elsewhere, step.elsewhere_indices, value, origin, arrival_ms
            )
            rejections = [*rejections, *forwarded]
        if writer.unwritable:
            rejections = [*rejections, *writer.unwritable]
            writer.unwritable.clear()
        for rejection in rejections:
            writer.write_dead_letter(record.key, step.dead_letter(rejection, value, origin))

    def _apply_event(self, event: Record) -> Applied | None:
        """The step's `apply_event`: None for a device of another partition."""
        device_id: str = event["device_id"]
        partition = self._partition
        if partition_for(device_id, self.partitions) != partition:
            return None
        if self._emitting is not None and device_id != self._emitting:
            self.writer.send_outputs(self.out, self._emitting)
        self._emitting = device_id
        app_id: str = event["app_id"]
        device_key = table_key(app_id, device_id)
        device = self.devices.get(device_key)
        if device is None:
            stored = self.stored.get(device_key)
            if stored is not None and self.evicted.pop(device_key, None) is None:
                device = DeviceEntry.from_value(stored, device_key)
            else:  # new, or back before its eviction was committed: starts again either way
                device = DeviceEntry(self.processor.new_states(app_id, device_id), partition)
                if stored is None:
                    self._new[device_key] = partition
            self.devices[device_key] = device
        verdict = self.processor.apply(device.states, event, self.out)
        if verdict.rejected:
            return verdict
        if self._arrival_ms > device.arrival_ms:
            device.arrival_ms = self._arrival_ms
        if event["ts"] > device.latest_ts:
            device.latest_ts = event["ts"]
        self.dirty[device_key] = None
        self._touched[device_key] = device
        return verdict

    def _schedule(self, key: bytes, device: DeviceEntry) -> None:
        deadline = self.processor.deadline(device.states)
        if deadline is not None:
            due = due_at(device.arrival_ms, device.latest_ts, deadline, self.grace_ms)
            self.index.schedule(device.partition, key, due)
        else:
            self.index.cancel(key)

    # Expiry

    def expire(self, partition: int) -> None:
        """Close the sessions due on `partition` by its clock, and book their next look."""
        now = self.clocks[partition].now(self.clock())
        out = self.out
        writer = self.writer
        for key in self.index.pop_due(partition, now):
            device = self._entry(key)
            if device is None:
                continue
            device_time = device_now(device.arrival_ms, device.latest_ts, now, self.grace_ms)
            self.processor.expire(device.states, device_time, out)
            writer.send_outputs(out, device.states[0].device_id)
            for rejection in writer.unwritable:  # no message to name as its origin
                log.error(
                    "device %s: not written: %s", key.decode(errors="replace"), rejection.error
                )
            writer.unwritable.clear()
            self.dirty[key] = None
            self._schedule(key, device)

    def _entry(self, key: bytes) -> DeviceEntry | None:
        """The decoded device of `key` (None: not in the table, or leaving it)."""
        device = self.devices.get(key)
        if device is None and key not in self.evicted:
            stored = self.stored.get(key)
            if stored:
                device = self.devices[key] = DeviceEntry.from_value(stored, key)
        return device

    # Eviction

    def evict(self, budget: int = EVICTION_SLICE) -> int:
        """Look at up to `budget` more devices of the table in the current sweep, and mark for
        eviction those with no session open whose last message arrived `device_ttl_days` ago
        or more by their partition's clock. Their tombstones go to the changelog with the next
        commit. A sweep goes through the table once; the next starts SWEEP_PAUSE_MS (or a
        tenth of the time to live, if shorter) after it ended, by the wall clock. Returns how
        many devices were marked."""
        wall_ms = self.clock()
        if self.ttl_ms <= 0 or wall_ms < self._sweep_after_ms:
            return 0
        if self._sweep is None:  # (a dict's keys are copied: it changes while swept)
            keys = self.stored.keys()
            self._sweep = iter(keys) if isinstance(self.stored, RocksTable) else iter(list(keys))
        marked = 0
        seen = 0
        clocks = self.clocks
        for key in islice(self._sweep, budget):
            seen += 1
            if key == CHECKPOINT_KEY or key in self.dirty:
                continue
            stored = self.stored.get(key)
            if not stored or has_open_session(stored):
                continue
            partition, arrival_ms = stored_head(stored)
            if partition not in self.indexed:
                continue
            if clocks[partition].now(wall_ms) >= arrival_ms + self.ttl_ms:
                self.evicted[key] = partition
                self.devices.pop(key, None)
                marked += 1
        if seen < budget:  # the sweep is through
            self._sweep = None
            self._sweep_after_ms = wall_ms + min(SWEEP_PAUSE_MS, self.ttl_ms // 10)
        return marked

    # Checkpoints and recovery

    @property
    def pending(self) -> bool:
        """Devices changed or evicted, or offsets consumed, since the last commit."""
        return bool(self.dirty or self.uncommitted or self.evicted)

    def changes(self) -> Iterator[tuple[bytes, int, bytes | None]]:
        """What the changelog gets at the next commit: (key, partition, value) of each device
        changed since the last one, and a tombstone (value None) for each evicted."""
        for key in self.dirty:
            device = self.devices.get(key)
            if device is not None:
                deadline = self.processor.deadline(device.states)
                yield key, device.partition, device.to_value(deadline)
        for key, partition in self.evicted.items():
            yield key, partition, None

    def committed(self, saved: Iterable[tuple[bytes, bytes | None]]) -> None:
        """The transaction committed: the table now holds `saved` (key, value; None: gone),
        nothing consumed or changed is uncommitted any more."""
        stored = self.stored
        devices = self.devices
        held = self.held
        for key, value in saved:
            if value is None:
                stored.pop(key, None)
                if (partition := self.evicted[key]) in held:
                    held[partition] -= 1
                continue
            stored[key] = value
            if (new := self._new.get(key)) is not None:
                held[new] = held.get(new, 0) + 1
            device = devices.pop(key, None)  # the most recently changed are kept longest
            if device is not None:
                devices[key] = device
        excess = len(devices) - self.cache_size
        if excess > 0:
            for key in list(islice(devices, excess)):
                del devices[key]
        self.dirty = {}
        self.evicted = {}
        self._new = {}
        self.committed_clocks = {p: clock.newest_ms for p, clock in self.clocks.items()}
        self.uncommitted = {}
        self.uncommitted_messages = 0

    def rollback(self) -> None:
        """Back to the last commit: the devices changed since are put back as the table holds
        them, and how far the partitions were read since is forgotten (they are read again)."""
        self.out.clear()
        self.writer.unwritable.clear()
        self._emitting = None
        self._touched.clear()
        for key in self.dirty:
            self.devices.pop(key, None)
            device = self._entry(key)
            if device is not None:
                self._schedule(key, device)
        self.dirty = {}
        self.evicted = {}
        self._new = {}
        for tp in self.uncommitted:
            self.positions.pop(tp, None)
        self.uncommitted = {}
        self.uncommitted_messages = 0
        for partition, clock in self.clocks.items():  # (a clock reset since stays so)
            clock.newest_ms = min(clock.newest_ms, self.committed_clocks.get(partition, 0))

    @property
    def devices_held(self) -> int:
        """Devices the table holds on this worker's partitions (as committed)."""
        return sum(self.held.values())

    @property
    def open_sessions(self) -> int:
        """Devices with a session open on this worker's partitions (each has a deadline)."""
        return len(self.index)

    def forget_positions(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions left this worker: a later owner may have moved on."""
        for tp in tps:
            self.positions.pop(tp, None)

    # Rebalances

    def reindex(self, actives: frozenset[int]) -> None:
        """Hold the devices of the partitions `actives` (this worker's now), and only those."""
        for _ in self.reindexing(actives):
            pass

    def reindexing(self, actives: frozenset[int]) -> Iterator[None]:
        """`reindex`, in steps: it yields after every ASSIGN_SLICE table values it reads (the
        adapter lets the event loop run there: heartbeats must not wait for a big table)."""
        self.revoke(self.indexed - actives)
        yield from self.assigning(actives - self.indexed)
        log.info("deadline index rebuilt: %d devices waiting", len(self.index))

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget the devices and deadlines of partitions this worker lost."""
        for partition in partitions:
            self.index.drop_partition(partition)
            self.held.pop(partition, None)
            for key in [k for k, d in self.devices.items() if d.partition == partition]:
                del self.devices[key]
        self.indexed = self.indexed.difference(partitions)
        self._sweep = None

    def assign(self, partitions: frozenset[int]) -> None:
        """Take on new partitions: a fresh clock each, their devices counted and the deadlines
        of those with a session open booked, from the values' headers (nothing is decoded)."""
        for _ in self.assigning(partitions):
            pass

    def assigning(self, partitions: frozenset[int]) -> Iterator[None]:
        """`assign`, yielding after every ASSIGN_SLICE table values."""
        held = self.held
        for partition in partitions:
            self.clocks[partition] = PartitionClock()
            held[partition] = 0
        schedule = self.index.schedule
        grace_ms = self.grace_ms
        # A dict's items are copied: the table may change while the adapter lets others run.
        items = self.stored.items()
        for n, (key, stored) in enumerate(
            items if isinstance(self.stored, RocksTable) else list(items), start=1
        ):
            if n % ASSIGN_SLICE == 0:
                yield
            if not stored or key == CHECKPOINT_KEY:
                continue
            header = stored_header(stored)
            if header is None:  # plain JSON, written by an earlier version
                partition = stored_partition(stored)
                if partition in partitions:
                    held[partition] += 1
                    if has_open_session(stored):
                        self._schedule(key, DeviceEntry.from_value(stored, key))
                continue
            if header.partition not in partitions:
                continue
            held[header.partition] += 1
            if header.deadline is not None:
                due = due_at(header.arrival_ms, header.latest_ts, header.deadline, grace_ms)
                schedule(header.partition, key, due)
        self.indexed = self.indexed | partitions
        self._sweep = None


def _origin(record: FetchedRecord) -> tuple[dict[str, Any], list[int | None] | None]:
    """Where a message came from, and the batch positions of forwarded events (else None)."""
    headers: Any = record.headers or ()
    for name, raw in headers.items() if isinstance(headers, dict) else headers:
        if name == ORIGIN_HEADER:
            forwarded = orjson.loads(raw)
            return forwarded["origin"], forwarded["indices"]
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}, None
