"""The streaming worker: a thin Faust adapter around the session engine.

Topics in, a table of device states, an agent per input topic, an expiry timer, and sinks.
Every session decision is made by `pipeline.processing.processor` / `pipeline.engine.rules`.

Input arrives a whole fetch at a time (`pipeline.streaming.fetches`): Faust's per-message delivery
cost more than the session rules. The agents only make Faust subscribe to the input topics.

Delivery (exactly once for read_committed consumers, nothing lost):
- A fetch's messages are applied in offset order; the records they emit are batched per topic
  partition and sent inside the open Kafka transaction of this worker's producer.
- Every `checkpoint_every` messages or `commit_interval_s`, a checkpoint writes each changed
  device once to the table's changelog, adds the consumed offsets, and commits the
  transaction: outputs, state and offsets become visible together, or not at all. After a crash
  the restarted worker fences the old producer (its open transaction is aborted), recovers the
  table from the committed changelog and replays from the committed offsets, so no record is
  lost and none (a session_start included) is delivered twice.
- Faust reads its changelog and inputs with isolation_level=read_committed (see
  `_read_committed_only`): it would otherwise recover state from aborted transactions.
- Devices are processed on the partition their device id hashes to (Kafka's default murmur2
  partitioner). A message found elsewhere (keyed otherwise, or not keyed) is validated, then
  its events are forwarded to an internal repartition topic on the right partition.

No message stops the worker (SPEC section 2):
- Every topic holds the largest record the worker writes there (`pipeline.kafka.topics` creates them
  so, and the worker refuses to start on one that cannot). A record that would not fit even so
  is caught as it is queued: an output record becomes a `too_large` dead letter, a forwarded
  batch of events is split.
- A transient Kafka failure (brokers unreachable, a request timed out, a leader or coordinator
  moving) that cuts a fetch, tick or checkpoint short aborts the open transaction and goes back
  to the last commit: devices changed since are put back and the messages since are read
  again. The worker never exits for it.
- Anything else (fenced by a newer instance, refused by the brokers, a bug), and a crash of any
  Faust service, ends the process with a non-zero exit code within FATAL_EXIT_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import aiokafka
import faust
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    BrokerNotAvailableError,
    ConcurrentTransactions,
    KafkaError,
    KafkaTimeoutError,
    ProducerFenced,
    RebalanceInProgressError,
)
from aiokafka.partitioner import murmur2
from aiokafka.producer.transaction_manager import TransactionState
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.types import TP

from pipeline.config import Config
from pipeline.engine import Applied, Record
from pipeline.input.events import (
    TOO_LARGE,
    Rejection,
    attribute_rejection,
    batch_event_as_sent,
    dead_letter,
    parse_message,
)
from pipeline.kafka.outages import client_noise
from pipeline.kafka.topics import (
    RECORD_FRAMING_BYTES,
    TABLE_NAME,
    changelog_max_message_bytes,
    changelog_topic,
    max_message_bytes,
    repartition_topic,
    required_configs,
)
from pipeline.memory import collect_rarely, keep_freed_memory
from pipeline.processing.processor import Outputs, Processor
from pipeline.streaming.codec import DeviceRecord, table_key
from pipeline.streaming.expiry import DeadlineIndex, PartitionClock, device_now, due_at
from pipeline.streaming.fetches import FetchApp
from pipeline.vocabulary import SESSION_RECORD_TYPES, wall_ms

log = logging.getLogger("sessionize.worker")

ORIGIN_HEADER = "sessionize-origin"
# A fatal error ends the process within this: a clean stop if it comes in time, else a hard one.
FATAL_EXIT_S = 8.0
EXIT_KAFKA = 3  # as the command line's: Kafka cannot be used (fenced, refused)
EXIT_BUG = 1
# As Kafka Streams does: a killed worker's open transaction blocks readers of its partitions
# until the broker aborts it, this long after it began (Kafka's default is 60 s).
TRANSACTION_TIMEOUT_MS = 10_000
# After a transient failure, the next try waits this long, doubling up to the most.
RETRY_BACKOFF_S = (0.5, 5.0)
# Written outside transactions after each commit, so the changelog ends with a record Faust's
# recovery can read (it waits for the last offset, which would otherwise be a commit marker).
CHECKPOINT_KEY = b"\x00checkpoint"


@functools.lru_cache(maxsize=1 << 18)
def key_hash(key: bytes) -> int:
    """Kafka's default partitioner hash of a key (murmur2 is slow in Python: cached)."""
    return int(murmur2(key) & 0x7FFFFFFF)


def partition_for(device_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for key `device_id`."""
    return key_hash(device_id.encode()) % partitions


class RecordTooLarge(Exception):
    """A record that its topic would refuse (it was not queued)."""

    def __init__(self, topic: str, size: int, room: int) -> None:
        super().__init__(f"{size} bytes, over the {room} a record may have on topic '{topic}'")
        self.topic = topic
        self.size = size
        self.room = room


class TransactionalSink:
    """Records on their way to Kafka, gathered into one record batch per topic partition.

    `add` only appends (no await: a fetch's records are applied in one go); full batches are
    handed to the producer by `ship`, the rest by `flush`. Each batch costs one future instead
    of one per record. Keys are placed with Kafka's default partitioner, over partition counts
    learnt by `learn_partitions` before the first record. A record bigger than its topic takes
    (key, value and headers: `room`, or `rooms[topic]` where a topic takes more) is refused
    with RecordTooLarge: the broker would refuse its whole batch, and the transaction with it.
    """

    def __init__(
        self, producer: aiokafka.AIOKafkaProducer, room: int, rooms: dict[str, int] | None = None
    ) -> None:
        self.producer = producer
        self.room = room
        self.rooms = rooms or {}  # every one at least `room`
        self.builders: dict[tuple[str, int], Any] = {}
        self.full: list[tuple[tuple[str, int], Any]] = []
        self.partition_counts: dict[str, int] = {}
        self.pending: list[Awaitable[Any]] = []
        # When the first batch of the transaction went to the producer (the brokers time the
        # transaction from there); None while nothing has.
        self.opened_at: float | None = None

    async def learn_partitions(self, topics: Iterable[str]) -> None:
        """Look up the partition counts of the topics records will be keyed to."""
        for topic in topics:
            self.partition_counts[topic] = len(await self.producer.partitions_for(topic))

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one record (sent at the latest by the next `flush`); RecordTooLarge if its
        topic would refuse it."""
        size = len(value) + len(key) if key else len(value)
        if headers:
            size += sum(len(name) + len(data) for name, data in headers)
        if size > self.room and size > (room := self.rooms.get(topic, self.room)):
            raise RecordTooLarge(topic, size, room)
        if partition is None:
            partition = key_hash(key) % self.partition_counts[topic] if key else 0
        slot = (topic, partition)
        builder = self.builders.get(slot)
        if builder is None:
            builder = self.builders[slot] = self.producer.create_batch()
        if builder.append(key=key, value=value, timestamp=timestamp_ms, headers=headers or []):
            return
        self.full.append((slot, builder))  # full: shipped by the next `ship`
        builder = self.builders[slot] = self.producer.create_batch()
        builder.append(key=key, value=value, timestamp=timestamp_ms, headers=headers or [])

    async def ship(self) -> None:
        """Hand the full batches to the producer."""
        full, self.full = self.full, []
        for slot, builder in full:
            await self._ship(slot, builder)

    async def flush(self) -> None:
        """Send every batch and wait until the broker has them all."""
        await self.ship()
        builders, self.builders = self.builders, {}
        for slot, builder in builders.items():
            await self._ship(slot, builder)
        pending, self.pending = self.pending, []
        if pending:
            await asyncio.gather(*pending)

    @property
    def empty(self) -> bool:
        """Nothing queued."""
        return not self.builders and not self.full

    def discard(self) -> None:
        """Forget what is queued and not yet handed over (its transaction is being aborted)."""
        self.builders = {}
        self.full = []
        self.pending = []
        self.opened_at = None

    async def _ship(self, slot: tuple[str, int], builder: Any) -> None:
        if self.opened_at is None:
            self.opened_at = time.monotonic()
        topic, partition = slot
        self.pending.append(await self.producer.send_batch(builder, topic, partition=partition))


class GapReader:
    """Reads a range of a partition directly (read_committed, no group), and committed offsets."""

    def __init__(self, config: Config) -> None:
        self.options = config.kafka.client_options()
        self.consumer: aiokafka.AIOKafkaConsumer | None = None
        self.admin: AIOKafkaAdminClient | None = None

    async def committed(self, tp: TP, group: str) -> int:
        """The group's committed offset on `tp` (0 when it has none)."""
        if self.admin is None:
            self.admin = AIOKafkaAdminClient(**self.options)
            await self.admin.start()
        partition = TopicPartition(tp.topic, tp.partition)
        offsets = await self.admin.list_consumer_group_offsets(group, partitions=[partition])
        found = offsets.get(partition)
        return found.offset if found is not None and found.offset >= 0 else 0

    async def read(self, tp: TP, start: int, end: int) -> AsyncIterator[ConsumerRecord]:
        """The messages of `tp` from offset `start` up to (not including) `end`."""
        if self.consumer is None:
            self.consumer = aiokafka.AIOKafkaConsumer(
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                **self.options,
            )
            await self.consumer.start()
        partition = TopicPartition(tp.topic, tp.partition)
        self.consumer.assign([partition])
        self.consumer.seek(partition, start)
        while await self.consumer.position(partition) < end:
            batch = await self.consumer.getmany(partition, timeout_ms=1000)
            for record in batch.get(partition, []):
                if record.offset >= end:
                    return
                yield record

    async def close(self) -> None:
        """Stop the clients."""
        if self.consumer is not None:
            await self.consumer.stop()
        if self.admin is not None:
            await self.admin.close()


class SessionWorker:
    """Processes input messages and timer ticks; owns the in-memory view of the device table."""

    def __init__(self, app: FetchApp, config: Config, partitions: int) -> None:
        self.app = app
        self.config = config
        self.partitions = partitions
        self.processor = Processor(config.sessions, config.partners)
        self.grace_ms = round(config.worker.grace_s * 1000)
        self.topics = config.topics
        self.partner_topics = {p.name: p.topic for p in config.partners}
        self.limits = config.limits
        # Forwarded events were checked against max_event_bytes as they came in; with what they
        # inherited from their batch they may take up to a record of the repartition topic.
        self.forwarded_limits = replace(config.limits, max_event_bytes=max_message_bytes(config))
        # Created by pipeline.kafka.topics before Faust starts; Faust would create them alike.
        required = required_configs(config)
        self.table = app.Table(
            TABLE_NAME,
            key_type=bytes,
            value_type=bytes,
            partitions=partitions,
            default=None,
            extra_topic_configs=required[changelog_topic(config)],
        )
        self.repartition_topic = app.topic(
            repartition_topic(config),
            key_type=bytes,
            value_type=bytes,
            partitions=partitions,
            internal=True,
            config=required[repartition_topic(config)],
        )
        self.input_topic = app.topic(
            config.topics.input, key_type=bytes, value_type=bytes, partitions=partitions
        )
        self.devices: dict[bytes, DeviceRecord] = {}
        self.index = DeadlineIndex()
        self.clocks: dict[int, PartitionClock] = defaultdict(PartitionClock)
        self.positions: dict[TP, int] = {}  # next offset after the last processed message
        self.processed_at: dict[TP, float] = {}  # monotonic time of the last processed message
        self.indexed: frozenset[int] = frozenset()
        self.dirty: set[bytes] = set()  # devices changed since the last commit
        self.uncommitted: dict[TP, int] = {}  # offsets to commit with the transaction
        self.uncommitted_messages = 0
        self.committed_clocks: dict[int, int] = {}  # partition clocks at the last commit
        self.out = self.processor.new_outputs()
        # Output records too large for their topic, as rejections for dead letters.
        self.unwritable: list[Rejection] = []
        self.retry_backoff_s = RETRY_BACKOFF_S[0]
        self.recovering: BaseException | None = None  # a failure still to be recovered from
        self.verbatim_topics = [self.partner_topics[name] for name in self.out.verbatim]
        self.checkpoint_every = config.worker.checkpoint_every
        self.committed_at = time.monotonic()
        self.markers_sent: list[Awaitable[Any]] = []
        self.lock = asyncio.Lock()
        self.producer: aiokafka.AIOKafkaProducer | None = None
        self.marker_producer: aiokafka.AIOKafkaProducer | None = None
        self.sink: TransactionalSink | None = None
        self.gaps: GapReader | None = None
        self.watchdog: asyncio.Future[None] | None = None
        self.broken = False
        self.stopped = False
        self.failures = 0  # transient failures recovered from since the last line about them
        self.failure_logged_at = 0.0
        self.crashing: asyncio.Future[None] | None = None

    # Messages

    async def on_fetch(self, tp: TP, records: Sequence[ConsumerRecord]) -> None:
        """Apply a fetched run of one partition's input messages (events or batches)."""
        # One fetch, tick or checkpoint at a time: nothing is sent between a transaction's
        # commit and the next one's start, and no message straddles two transactions.
        async with self.lock, self._whole():
            if self.stopped or not records:
                return
            await self._prepare()
            expected = await self._next_offset(tp)
            first = records[0].offset
            if first > expected:
                await self._fill_gap(tp, expected, first)
                expected = first
            apply = self._apply_message
            applied = 0
            for record in records:
                if record.offset >= expected:  # else: read already (a replay, or a gap fill)
                    apply(tp, record)
                    applied += 1
            self.processed_at[tp] = time.monotonic()
            self.uncommitted_messages += applied
            assert self.sink is not None
            await self.sink.ship()
            if self.uncommitted_messages >= self.checkpoint_every:
                await self._commit()

    @contextlib.asynccontextmanager
    async def _whole(self) -> AsyncIterator[None]:
        # A fetch, tick or checkpoint cut short may have changed state without sending all it
        # owes: its transaction must never commit. Cancelled (at shutdown): nothing commits
        # any more, the next start replays. A transient failure: the transaction is aborted and
        # the input since the last commit read again. Anything else is fatal.
        try:
            yield
        except asyncio.CancelledError:
            self.broken = True
            raise
        except Exception as exc:
            if self.stopped:  # shutting down, or failed already: nothing commits any more
                self.broken = True
                log.debug("after the stop: %r", exc)
                return
            if not (is_transient(exc) or self._timed_out(exc)):
                self._fail(exc)
                return
            self._note_failure(exc)
            self.recovering = exc
            with contextlib.suppress(Exception):  # if this fails too, `_prepare` tries again
                await self._recover()
            # Not at once again: while the brokers are away every fetch and tick would fail.
            await asyncio.sleep(self.retry_backoff_s)
            self.retry_backoff_s = min(2 * self.retry_backoff_s, RETRY_BACKOFF_S[1])

    async def _prepare(self) -> None:
        """Before a fetch or tick writes: the producer and its transaction, after a recovery
        from the last failure if that is still to be done."""
        if self.recovering is not None:
            await self._recover()
        await self._ensure_producer()

    async def _recover(self) -> None:
        """Go back to the last commit: abort the open transaction, put back the devices changed
        since, and forget how far the partitions were read, so that the next fetch or tick
        reads the messages since the last commit again (see `_fill_gap`)."""
        self.out.clear()
        self.unwritable.clear()
        for key in self.dirty:
            stored = self.table.data.get(key)
            if stored is None:
                self.devices.pop(key, None)
                continue
            device = self.devices[key] = DeviceRecord.from_json(stored)
            self._schedule(key, device)
        self.dirty = set()
        for tp in self.uncommitted:
            self.positions.pop(tp, None)
        self.uncommitted = {}
        self.uncommitted_messages = 0
        for partition, clock in self.clocks.items():  # (a clock reset since stays so)
            clock.newest_ms = min(clock.newest_ms, self.committed_clocks.get(partition, 0))
        if self.producer is not None:
            assert self.sink is not None
            self.sink.discard()
            state = self.producer._txn_manager.state
            if state in (TransactionState.IN_TRANSACTION, TransactionState.ABORTABLE_ERROR):
                await self.producer.abort_transaction()  # waits for the brokers to answer
                await self._begin_transaction()
            elif state is TransactionState.READY:
                await self._begin_transaction()
            else:  # fenced, or mid-commit: a new producer, whose epoch aborts what was open
                producer, self.producer, self.sink = self.producer, None, None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5.0)
        self.recovering = None

    async def _begin_transaction(self) -> None:
        assert self.producer is not None and self.sink is not None
        await self.producer.begin_transaction()
        self.sink.opened_at = None

    def _timed_out(self, error: BaseException) -> bool:
        # The brokers abort a transaction open longer than its timeout and fence its producer:
        # so it goes after an outage. Fenced within the timeout: a newer instance took over.
        opened_at = self.sink.opened_at if self.sink is not None else None
        if not isinstance(error, ProducerFenced) or opened_at is None:
            return False
        return time.monotonic() - opened_at > TRANSACTION_TIMEOUT_MS / 1000

    def _note_failure(self, error: BaseException) -> None:
        # One line per outage or so: a failure repeats on every fetch while the brokers are away.
        self.failures += 1
        now = time.monotonic()
        if now - self.failure_logged_at < 30.0:
            return
        self.failure_logged_at = now
        log.warning(
            "Kafka failed under the worker (%s: %s; %d such failures since the last line): "
            "aborting the transaction, the input since the last commit is read again",
            type(error).__name__,
            error,
            self.failures,
        )
        self.failures = 0

    def _fail(self, error: BaseException) -> None:
        """A fatal error: nothing commits any more, and the process ends (run_worker)."""
        self.broken = True
        self.stopped = True
        if not isinstance(error, KafkaError):
            log.critical("a bug stops the worker", exc_info=error)
        if self.app.crash_handler is not None:
            self.app.crash_handler(error)
        else:  # not run by run_worker: Faust's own handling
            self.crashing = asyncio.ensure_future(self.app.crash(error))

    async def _next_offset(self, tp: TP) -> int:
        """The offset this worker must see next on `tp`: after its last, or the committed one."""
        known = self.positions.get(tp)
        if known is not None:
            return known
        assert self.gaps is not None
        committed = await self.gaps.committed(tp, self.app.conf.id)
        self.positions[tp] = committed
        return committed

    async def _fill_gap(self, tp: TP, start: int, end: int) -> None:
        # Records between the last applied offset and a fetch (or the end of the partition)
        # that never reached on_fetch: read them ourselves, in order, before going on. Faust's
        # streams dropped such runs after a table recovery (their read-offset guard); fetches
        # bypass that guard, so this is a safety net. Transaction markers also leave gaps;
        # those read as nothing.
        assert self.gaps is not None
        recovered = 0
        async for record in self.gaps.read(tp, start, end):
            self._apply_message(tp, record)
            recovered += 1
        self.uncommitted_messages += recovered
        self.positions[tp] = end
        if recovered:
            log.warning(
                "read %d messages of %s the stream skipped (offsets %d-%d)",
                recovered,
                tp,
                start,
                end - 1,
            )

    def _apply_message(self, tp: TP, record: ConsumerRecord) -> None:
        value: bytes = record.value if isinstance(record.value, bytes) else b""
        partition = record.partition
        arrival_ms: int = record.timestamp if record.timestamp else wall_ms()
        self.positions[tp] = self.uncommitted[tp] = record.offset + 1
        self.clocks[partition].observe(arrival_ms)
        origin, indices = self._origin(record)
        limits = self.limits if indices is None else self.forwarded_limits
        parsed = parse_message(value, wall_ms(), limits)
        out = self.out
        dead: list[tuple[bytes | None, bytes]] = []
        for rejection in parsed.rejections:
            dead.append(self._dead_letter(rejection, value, origin, record.key))
        forward: dict[str, list[dict[str, Any]]] = {}
        forward_indices: dict[str, list[int | None]] = {}
        touched: dict[bytes, DeviceRecord] = {}
        emitting: str | None = None  # whose records `out` holds (a batch is mostly one device)
        for position, body in enumerate(parsed.events):
            index = _index_of(position, parsed.indices, indices)
            device_id: str = body["device_id"]
            if partition_for(device_id, self.partitions) != partition:
                forward.setdefault(device_id, []).append(body)
                forward_indices.setdefault(device_id, []).append(index)
                continue
            if emitting is not None and device_id != emitting:
                self._send_outputs(out, emitting)
            emitting = device_id
            verdict = self._apply(body, partition, arrival_ms, out, touched)
            if verdict.rejected:
                rejection = attribute_rejection(verdict.value, body, index, value)
                dead.append(self._dead_letter(rejection, value, origin, record.key))
        if emitting is not None:
            self._send_outputs(out, emitting)
        for device_key, device in touched.items():
            self._schedule(device_key, device)  # once per device and message
        for device_id, bodies in forward.items():
            refused = self._forward(
                device_id, bodies, origin, forward_indices[device_id], arrival_ms
            )
            for index, exc in refused:
                payload = batch_event_as_sent(value, index) if index is not None else None
                error = f"forwarded to its device's partition, the event is {exc}"
                rejection = Rejection(TOO_LARGE, error, index, payload)
                dead.append(self._dead_letter(rejection, value, origin, record.key))
        if self.unwritable:
            for rejection in self.unwritable:
                dead.append(self._dead_letter(rejection, value, origin, record.key))
            self.unwritable.clear()
        for key, dead_record in dead:
            self._write_dead_letter(key, dead_record)

    def _apply(
        self,
        body: Record,
        partition: int,
        arrival_ms: int,
        out: Outputs,
        touched: dict[bytes, DeviceRecord],
    ) -> Applied:
        device_key = table_key(body["app_id"], body["device_id"])
        device = self._device(device_key, body["app_id"], body["device_id"], partition)
        verdict = self.processor.apply(device.states, body, out)
        if verdict.rejected:
            return verdict
        if arrival_ms > device.arrival_ms:
            device.arrival_ms = arrival_ms
        if body["ts"] > device.latest_ts:
            device.latest_ts = body["ts"]
        self.dirty.add(device_key)
        touched[device_key] = device
        return verdict

    def _device(self, key: bytes, app_id: str, device_id: str, partition: int) -> DeviceRecord:
        device = self.devices.get(key)
        if device is None:
            stored = self.table.data.get(key)
            if stored is not None:
                device = DeviceRecord.from_json(stored)
            else:
                device = DeviceRecord(self.processor.new_states(app_id, device_id), partition)
            self.devices[key] = device
        return device

    def _schedule(self, key: bytes, device: DeviceRecord) -> None:
        deadline = self.processor.deadline(device.states)
        if deadline is not None:
            due = due_at(device.arrival_ms, device.latest_ts, deadline, self.grace_ms)
            self.index.schedule(device.partition, key, due)

    def _origin(self, message: Any) -> tuple[dict[str, Any], list[int | None] | None]:
        headers: Any = message.headers or ()
        for name, raw in headers.items() if isinstance(headers, dict) else headers:
            if name == ORIGIN_HEADER:
                forwarded = orjson.loads(raw)
                return forwarded["origin"], forwarded["indices"]
        return {
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
        }, None

    def _forward(
        self,
        device_id: str,
        bodies: list[Record],
        origin: dict[str, Any],
        indices: list[int | None],
        arrival_ms: int,
    ) -> list[tuple[int | None, RecordTooLarge]]:
        """Forward a device's events to its partition; returns the ones too large to."""
        header = orjson.dumps({"origin": origin, "indices": indices})
        try:
            self._out.add(
                self.repartition_topic.get_topic_name(),
                device_id.encode(),
                orjson.dumps({"events": bodies}),
                partition=partition_for(device_id, self.partitions),
                timestamp_ms=arrival_ms,
                headers=[(ORIGIN_HEADER, header)],
            )
        except RecordTooLarge as exc:
            if len(bodies) == 1:
                return [(indices[0], exc)]
            # Events inherit the batch's ids: forwarded, a batch can outgrow its message.
            half = len(bodies) // 2
            return [
                *self._forward(device_id, bodies[:half], origin, indices[:half], arrival_ms),
                *self._forward(device_id, bodies[half:], origin, indices[half:], arrival_ms),
            ]
        return []

    def _dead_letter(
        self, rejection: Rejection, message: bytes, origin: dict[str, Any], key: bytes | None
    ) -> tuple[bytes | None, bytes]:
        cap = self.config.limits.max_dead_letter_payload_bytes
        return key, orjson.dumps(dead_letter(rejection, message, origin, cap))

    def _write_dead_letter(self, key: bytes | None, value: bytes) -> None:
        try:
            self._out.add(self.topics.deadletter, key, value)
        except RecordTooLarge as exc:  # its payload is capped: only a huge error text can do it
            record = orjson.loads(value)
            record["error"] = record["error"][:1000] + " [cut: the dead letter was too large]"
            try:
                self._out.add(self.topics.deadletter, key, orjson.dumps(record))
            except RecordTooLarge:
                log.error("a dead letter of %s is %s: not written", _where(record), exc)

    def _send_outputs(self, out: Outputs, device_id: str) -> None:
        """Queue what one device emitted; every output is keyed by its device id."""
        key = device_id.encode()
        send = self._out.add
        sessions, enriched = self.topics.sessions, self.topics.enriched
        verbatim = self.verbatim_topics
        for record in out.canonical:  # each serialized once for every topic that carries it
            value = orjson.dumps(record)
            try:
                send(sessions if record["type"] in SESSION_RECORD_TYPES else enriched, key, value)
                for topic in verbatim:  # as big a record takes as much room there
                    send(topic, key, value)
            except RecordTooLarge as exc:
                self._unwritable(exc, record, value)
        for name, records in out.partners.items():
            topic = self.partner_topics[name]
            for record in records:
                value = orjson.dumps(record)
                try:
                    send(topic, key, value)
                except RecordTooLarge as exc:
                    self._unwritable(exc, record, value, f"partner {name}'s ")
        out.clear()

    def _unwritable(
        self, error: RecordTooLarge, record: Record, value: bytes, whose: str = ""
    ) -> None:
        # A record its topic would refuse: a too_large dead letter instead, carrying the record.
        kind = record.get("type") or record.get("event_type") or "output"
        about = ", ".join(
            f"{name} {record[name]}" for name in ("session_id", "event_id") if name in record
        )
        error_text = f"its {whose}{kind} record ({about}) is {error}"
        self.unwritable.append(Rejection(TOO_LARGE, error_text, None, value))

    @property
    def _out(self) -> TransactionalSink:
        # Records are batched per partition and delivered by the checkpoint, before the
        # transaction commits.
        assert self.sink is not None, "the producer starts with the first message or tick"
        return self.sink

    async def _ensure_producer(self) -> None:
        if self.producer is not None:
            return
        # Once per worker, or after a fenced one: records queued in a sink belong to its
        # producer's transaction.
        _quiet_client_logs()
        if self.marker_producer is None:
            markers = marker_producer(self.config)
            try:
                await markers.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(markers.stop(), 5.0)
                raise
            self.marker_producer = markers
        producer = transactional_producer(self.config)
        try:
            await producer.start()
            await producer.begin_transaction()
            changelog = self.table.changelog_topic.get_topic_name()
            sink = TransactionalSink(
                producer,
                max_message_bytes(self.config) - RECORD_FRAMING_BYTES,
                {changelog: changelog_max_message_bytes(self.config) - RECORD_FRAMING_BYTES},
            )
            topics = self.topics
            await sink.learn_partitions(
                {topics.sessions, topics.enriched, topics.deadletter, *self.partner_topics.values()}
            )
        except BaseException:
            with contextlib.suppress(Exception):  # half started: the next try starts anew
                await asyncio.wait_for(producer.stop(), 5.0)
            raise
        self.producer, self.sink = producer, sink
        if self.gaps is None:
            self.gaps = GapReader(self.config)

    # Checkpoints

    async def checkpoint(self) -> None:
        """Commit the transaction: records sent so far, changed devices, consumed offsets."""
        async with self.lock, self._whole():
            if not self.stopped and self.recovering is None:
                await self._commit()

    async def _commit(self) -> None:
        if self.producer is None or self.broken:
            return
        markers, self.markers_sent = self.markers_sent, []
        if markers:
            await asyncio.gather(*markers)
        changelog = self.table.changelog_topic.get_topic_name()
        touched: set[int] = set()
        saved: list[tuple[bytes, bytes]] = []
        for key in self.dirty:
            device = self.devices.get(key)
            if device is not None:
                value = device.to_json()
                try:
                    self._out.add(changelog, key, value, partition=device.partition)
                except RecordTooLarge as exc:
                    log.error(
                        "device %s: its state is %s, not saved (a restart would find it as it "
                        "was at its last save)",
                        key.decode(errors="replace"),
                        exc,
                    )
                    continue
                saved.append((key, value))
                touched.add(device.partition)
        assert self.sink is not None
        await self.sink.flush()
        if self.uncommitted:
            offsets = {
                TopicPartition(tp.topic, tp.partition): o for tp, o in self.uncommitted.items()
            }
            await self.producer.send_offsets_to_transaction(offsets, self.app.conf.id)
        await self.producer.commit_transaction()
        log.debug(
            "committed offsets %s",
            {f"{tp.topic}:{tp.partition}": o for tp, o in self.uncommitted.items()},
        )
        # Only now the table holds these states: a failed commit goes back to the ones before.
        for key, value in saved:
            self.table.data[key] = value
        self.dirty = set()
        self.committed_clocks = {p: clock.newest_ms for p, clock in self.clocks.items()}
        self.committed_at = time.monotonic()
        self.app.note_committed(self.uncommitted)
        self.uncommitted = {}
        self.uncommitted_messages = 0
        self.retry_backoff_s = RETRY_BACKOFF_S[0]
        client_noise.back()
        # Markers only keep recovery from waiting on the last offset: not worth a round trip
        # here (the next commit, or the shutdown, makes sure they went out).
        self.markers_sent = await write_checkpoint_markers(self.marker_producer, changelog, touched)
        await self._begin_transaction()

    # Expiry

    async def on_tick(self) -> None:
        """Close sessions whose deadline has passed on their partition's clock."""
        async with self.lock, self._whole():
            if not self.stopped:
                await self._on_tick()

    async def _on_tick(self) -> None:
        if client_noise.in_outage:
            await self._probe()
        if not self._ready():
            return
        await self._prepare()
        actives = self._active_partitions()
        if actives != self.indexed:
            await self._reindex(actives)
        wall = wall_ms()
        out = self.out
        for partition in actives:
            clock = self.clocks[partition]
            clock.caught_up = await self._caught_up(partition)
            log.debug(
                "partition %d: caught up %s, clock %d", partition, clock.caught_up, clock.now(wall)
            )
            now = clock.now(wall)
            for key in self.index.pop_due(partition, now):
                device = self.devices.get(key)
                if device is None:
                    continue
                device_time = device_now(device.arrival_ms, device.latest_ts, now, self.grace_ms)
                self.processor.expire(device.states, device_time, out)
                self._send_outputs(out, device.states[0].device_id)
                for rejection in self.unwritable:  # no message to name as its origin
                    log.error(
                        "device %s: not written: %s", key.decode(errors="replace"), rejection.error
                    )
                self.unwritable.clear()
                self.dirty.add(key)
                self._schedule(key, device)
        pending = self.dirty or self.uncommitted or (self.sink is not None and not self.sink.empty)
        if pending and time.monotonic() - self.committed_at >= self.config.worker.commit_interval_s:
            await self._commit()

    async def _probe(self) -> None:
        # The clients said Kafka went away: whether it answers again (ends the outage's lines).
        if self.producer is None:
            return
        with contextlib.suppress(Exception):
            answered = await asyncio.wait_for(self.producer.client.force_metadata_update(), 2.0)
            if answered:
                client_noise.back()

    def watch_recovery(self) -> None:
        """Start the recovery watchdog (once): Faust starts timers only after the first
        recovery has completed, which is what may need help."""
        if self.watchdog is None:
            self.watchdog = asyncio.ensure_future(self._watch_recovery())

    async def _watch_recovery(self) -> None:
        while not self.stopped:
            await asyncio.sleep(self.config.worker.tick_s)
            async with self.lock:
                if not self.stopped:
                    await self._unstick_recovery()

    async def _unstick_recovery(self) -> None:
        """Let Faust's recovery finish on changelog partitions that end in a transaction marker.

        Faust recovers a changelog partition until it has read a record at the partition's last
        offset; when that offset is a marker (a worker killed for good left an aborted
        transaction, aborted by the broker after `transaction_timeout_ms`), it waits forever.
        Once the consumer has read past everything up to that offset and no record came,
        a checkpoint record gives it one to read.
        """
        recovery: Any = self.app.tables.recovery  # type: ignore[attr-defined]
        if not recovery.in_recovery:  # (the app counts as rebalancing until recovery ends)
            return
        consumer = self.app.consumer
        stuck = []
        for tp in list(recovery.active_tps):
            last = recovery.active_highwaters.get(tp)
            read = recovery.active_offsets.get(tp)
            if last is None or last < 0 or (read is not None and read >= last):
                continue  # empty, or recovered
            try:
                position = await consumer.position(tp)
            except Exception:  # not assigned any more: a rebalance is coming
                continue
            if position is not None and position > last:
                stuck.append(tp)
        if stuck:
            await self._ensure_producer()
            changelog = self.table.changelog_topic.get_topic_name()
            partitions = {tp.partition for tp in stuck if tp.topic == changelog}
            log.warning("changelog partitions %s end in a transaction marker", sorted(partitions))
            self.markers_sent += await write_checkpoint_markers(
                self.marker_producer, changelog, partitions
            )

    def _ready(self) -> bool:
        recovery: Any = self.app.tables.recovery  # type: ignore[attr-defined]
        return not self.app.rebalancing and not recovery.in_recovery

    def _active_partitions(self) -> frozenset[int]:
        names = {self.topics.input, self.repartition_topic.get_topic_name()}
        actives = self.app.assignor.assigned_actives()
        return frozenset(tp.partition for tp in actives if tp.topic in names)

    async def _caught_up(self, partition: int) -> bool:
        """Nothing left to read on the partition: everything fetched has been applied."""
        consumer = self.app.consumer
        pending = self.app.fetch_pending
        quiet_since = time.monotonic() - 2 * self.config.worker.tick_s
        for topic in (self.topics.input, self.repartition_topic.get_topic_name()):
            tp = TP(topic, partition)
            if tp in pending:
                return False  # fetched, not applied yet
            try:
                highwater = consumer.highwater(tp)
                fetched = await consumer.position(tp)
            except Exception:  # not assigned (yet): not caught up
                return False
            if highwater is None or fetched is None or fetched < highwater:
                return False
            position = await self._next_offset(tp)
            if position >= highwater:
                continue
            if self.processed_at.get(tp, 0) > quiet_since:
                return False  # still delivering
            # Fetched to the end, yet quiet short of it: transaction markers (they take offsets
            # too), or records on their way to on_fetch. Reading the rest settles which.
            await self._fill_gap(tp, position, highwater)
        return True

    async def _reindex(self, actives: frozenset[int]) -> None:
        for partition in self.indexed - actives:
            self.index.drop_partition(partition)
            for key in [k for k, d in self.devices.items() if d.partition == partition]:
                del self.devices[key]
        for partition in actives - self.indexed:
            self.clocks[partition] = PartitionClock()
        for key, stored in list(self.table.data.items()):
            if not stored or key == CHECKPOINT_KEY:
                continue
            device = self.devices.get(key) or DeviceRecord.from_json(stored)
            if device.partition in actives - self.indexed:
                self.devices[key] = device
                self._schedule(key, device)
        self.indexed = actives
        log.info("deadline index rebuilt: %d devices waiting", len(self.index))

    async def on_shutdown(self) -> None:
        """The consumer has stopped: commit what is whole, then close the producers.

        Nothing runs after this: a late message or tick would otherwise start a new producer
        and transaction, and could commit offsets whose records went with the old one.
        """
        if self.watchdog is not None:
            self.watchdog.cancel()
        async with self.lock:
            log.debug("shutting down; a message was cut short: %s", self.broken)
            try:
                if self.recovering is None:
                    await self._commit()
            except Exception as exc:  # the transaction stays open: the next start aborts it
                log.warning("not committed at shutdown (%s: %s)", type(exc).__name__, exc)
            self.stopped = True
            if self.markers_sent:
                await asyncio.gather(*self.markers_sent)
            for producer in (self.producer, self.marker_producer):
                if producer is not None:
                    await producer.stop()
            if self.gaps is not None:
                await self.gaps.close()

    async def on_revoked(self, revoked: Iterable[TP]) -> None:
        """Partitions leave this worker: write what is pending first."""
        await self.checkpoint()
        for tp in revoked:
            self.positions.pop(tp, None)  # a later owner may have moved on


def _index_of(
    position: int, indices: list[int] | None, forwarded: list[int | None] | None
) -> int | None:
    if forwarded is not None:
        return forwarded[position]
    return indices[position] if indices is not None else None


# Kafka errors that pass once the brokers are back, though aiokafka does not mark them retriable.
_TRANSIENT_KAFKA_ERRORS = (
    KafkaTimeoutError,
    BrokerNotAvailableError,
    ConcurrentTransactions,
    RebalanceInProgressError,
)


def is_transient(error: BaseException) -> bool:
    """A failure that passes once the brokers answer again (unreachable, a request timed out,
    a leader or coordinator moving or loading): worth a retry. Any other one is fatal: fenced
    by a newer instance, refused (authorization, an invalid transaction state), or a bug."""
    if isinstance(error, KafkaError):
        return bool(error.retriable) or isinstance(error, _TRANSIENT_KAFKA_ERRORS)
    return isinstance(error, TimeoutError | ConnectionError)


def _where(record: dict[str, Any]) -> str:
    return f"{record.get('topic')}:{record.get('partition')}@{record.get('offset')}"


def _quiet_client_logs() -> None:
    # aiokafka logs every send at DEBUG; building those records cost ~15 % of the worker's
    # time even when nothing printed them.
    for name in ("aiokafka", "kafka"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))


def create_app(config: Config, partitions: int | None = None) -> tuple[FetchApp, SessionWorker]:
    """The Faust app of the worker, with its agents and timer."""
    partitions = partitions or config.topics.partitions
    settings = config.worker
    app = FetchApp(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in config.kafka.bootstrap.split(",")],
        broker_credentials=_credentials(config),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=partitions,
        topic_replication_factor=config.topics.replication,
        web_enabled=settings.web_enabled,
        web_bind="127.0.0.1",
        web_port=settings.web_port,
        datadir=settings.data_dir,
        table_standby_replicas=0,
        producer_linger_ms=5,
        producer_max_request_size=_max_request_size(config),
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=4096,
        # Bigger fetches: with batches of events per message, 1 MiB caps a fast consumer.
        consumer_max_fetch_size=8 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        # Messages are acked at checkpoints, which stop with the worker: don't wait for acks.
        stream_wait_empty=False,
        # A killed worker's group membership lapses after this, letting its successor in.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
    _read_committed_only()
    worker = SessionWorker(app, config, partitions)

    async def subscribe(stream: Any) -> None:
        # Faust subscribes to the topics agents read; their records go to on_fetch instead.
        async for _ in stream.noack():
            pass

    app.agent(worker.input_topic, name="sessionize-input")(subscribe)
    app.agent(worker.repartition_topic, name="sessionize-by-device")(subscribe)
    app.deliver_fetches(
        [worker.input_topic.get_topic_name(), worker.repartition_topic.get_topic_name()],
        worker.on_fetch,
    )
    app.timer(settings.tick_s, name="sessionize-expiry")(worker.on_tick)

    async def revoked(sender: Any, revoked: Any, **_: Any) -> None:
        await worker.on_revoked(revoked)

    async def shutdown(sender: Any, **_: Any) -> None:
        await worker.on_shutdown()

    async def assigned(sender: Any, assigned: Any, **_: Any) -> None:
        worker.watch_recovery()

    app.on_partitions_revoked.connect(revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(assigned)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(shutdown)  # type: ignore[arg-type]
    return app, worker


def _credentials(config: Config) -> Any:
    kafka = config.kafka
    options = kafka.client_options()
    if kafka.sasl_mechanism:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=options.get("ssl_context"),
        )
    if "ssl_context" in options:
        return faust.SSLCredentials(options["ssl_context"])
    return None


def _max_request_size(config: Config) -> int:
    # As large as the largest record any topic of the worker takes (its table's changelog).
    return max(max_message_bytes(config), changelog_max_message_bytes(config))


def transactional_producer(config: Config) -> aiokafka.AIOKafkaProducer:
    """This worker's producer: one transactional id per worker instance, stable over restarts."""
    return aiokafka.AIOKafkaProducer(
        transactional_id=f"{config.worker.app_id}-{config.worker.instance_id}",
        enable_idempotence=True,
        transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        linger_ms=5,
        # A batch of several records must fit the smallest topic too (a lone record bigger
        # than this still goes alone: the size check of TransactionalSink.add bounds it).
        max_batch_size=min(256 * 1024, config.limits.max_record_bytes),
        max_request_size=_max_request_size(config),
        **config.kafka.client_options(),
    )


def marker_producer(config: Config) -> aiokafka.AIOKafkaProducer:
    """A plain idempotent producer, for the changelog's checkpoint markers."""
    return aiokafka.AIOKafkaProducer(
        enable_idempotence=True,
        max_request_size=_max_request_size(config),
        **config.kafka.client_options(),
    )


async def write_checkpoint_markers(
    producer: aiokafka.AIOKafkaProducer | None, changelog: str, partitions: Iterable[int]
) -> list[Awaitable[Any]]:
    """End each changelog partition with a non-transactional record (see CHECKPOINT_KEY);
    returns the deliveries to wait for."""
    if producer is None:
        return []
    return [
        await producer.send(changelog, b"", key=CHECKPOINT_KEY, partition=p) for p in partitions
    ]


async def fence_previous_instance(config: Config) -> None:
    """Before Faust recovers the table: abort what a killed predecessor left open, and end the
    changelog with a record Faust can read.

    Initializing a producer with the same transactional id fences the old one and aborts its
    open transaction; until then read_committed readers of the changelog would stall on it.
    """
    producer = transactional_producer(config)
    await producer.start()
    await producer.stop()
    changelog = changelog_topic(config)
    admin = AIOKafkaAdminClient(**config.kafka.client_options())
    await admin.start()
    try:
        if changelog not in await admin.list_topics():
            return  # a first start: nothing to recover (and nothing auto-created here)
        (described,) = await admin.describe_topics([changelog])
        partitions = sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()
    markers = marker_producer(config)
    await markers.start()
    try:
        await asyncio.gather(*await write_checkpoint_markers(markers, changelog, partitions))
    finally:
        await markers.stop()


def _read_committed_only() -> None:
    # Faust picks read_committed only for its own exactly_once mode, whose producer cannot
    # write tables; the worker does its own transactions, so Faust's consumer must skip
    # records of aborted ones (changelog recovery included).
    consumer_class = aiokafka.AIOKafkaConsumer
    if getattr(consumer_class, "_sessionize_read_committed", False):
        return

    class ReadCommittedConsumer(consumer_class):  # type: ignore[misc, valid-type]
        _sessionize_read_committed = True

        def __init__(self, *topics: str, **options: Any) -> None:
            options["isolation_level"] = "read_committed"
            super().__init__(*topics, **options)

    aiokafka.AIOKafkaConsumer = ReadCommittedConsumer


class FatalExit:
    """Ends the process after a fatal error, with a non-zero exit code, within FATAL_EXIT_S.

    The worker first stops as on SIGTERM (it leaves its consumer group, so others take over at
    once, and commits nothing: the fetch or tick that failed is not whole); should that not end
    the process in time, it exits there and then. Called from any thread.
    """

    def __init__(self) -> None:
        self.code: int | None = None

    def __call__(self, reason: BaseException) -> None:
        if self.code is not None:
            return
        self.code = EXIT_KAFKA if isinstance(reason, KafkaError) else EXIT_BUG
        log.critical(
            "the worker stops (exit %d) after %s: %s", self.code, type(reason).__name__, reason
        )
        hard_stop = threading.Timer(FATAL_EXIT_S, self.exit_now)
        hard_stop.daemon = True
        hard_stop.start()
        os.kill(os.getpid(), signal.SIGTERM)

    def exit_now(self) -> None:
        """End the process at once with the exit code."""
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(self.code if self.code is not None else EXIT_BUG)


class _Worker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        for handler in logger.handlers:  # a broker outage: a few lines, not thousands
            handler.addFilter(client_noise)


def run_worker(config: Config, partitions: int, loglevel: str = "warning") -> None:
    """Run a worker until SIGINT/SIGTERM, or until a fatal error ends it (SystemExit with a
    non-zero code). Its topics must have been prepared (`pipeline.kafka.topics`)."""
    keep_freed_memory()  # records are freed after every send: reuse the memory
    collect_rarely()  # device states are long-lived: don't keep re-scanning them
    asyncio.run(fence_previous_instance(config))
    app, _ = create_app(config, partitions)
    fatal = FatalExit()
    app.crash_handler = fatal
    worker = _Worker(app, loglevel=loglevel.upper(), quiet=True)
    # Faust's terminal spinner turns the root logger to DEBUG so that it "spins for every log
    # message": every aiokafka send then builds a log record. No spinner, no such cost.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    finally:
        if fatal.code is not None:
            raise SystemExit(fatal.code)
