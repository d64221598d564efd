"""The Kafka sink: records gathered into batches and sent inside the worker's transaction.

`RecordSink` is what the streaming core writes to (`add`, which may refuse a record with
RecordTooLarge); `TransactionalSink` is it for a transactional aiokafka producer, and
`pipeline.testing.ListSink` for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.streaming.partitioning import key_hash

if TYPE_CHECKING:
    import aiokafka

Headers = list[tuple[str, bytes]]


class RecordTooLarge(Exception):
    """A record that its topic would refuse (it was not queued)."""

    def __init__(self, topic: str, size: int, room: int) -> None:
        super().__init__(f"{size} bytes, over the {room} a record may have on topic '{topic}'")
        self.topic = topic
        self.size = size
        self.room = room


def record_size(key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
    """What a record counts against its topic's max.message.bytes: key, value and headers."""
    size = len(value) if value else 0
    if key:
        size += len(key)
    if headers:
        size += sum(len(name) + len(data) for name, data in headers)
    return size


# A record `add_values` did not queue: its position among the values, and why.
Refused = tuple[int, RecordTooLarge]
NO_HEADERS: Headers = []  # (only read)


class RecordSink(Protocol):
    """Where the streaming core writes the records it emits."""

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue one record; RecordTooLarge if its topic would refuse it."""

    def add_values(self, topic: str, key: bytes, values: list[bytes]) -> list[Refused]:
        """Queue one record per value, all with `key`, in order; returns those refused
        (RecordTooLarge), which are not queued, by their position in `values`."""


class _Batch:
    """One record batch on its way: aiokafka's BatchBuilder, appended to through its C
    builder (the wrapper's own `append` costs as much again per record)."""

    __slots__ = ("append", "builder", "count")

    def __init__(self, builder: Any) -> None:
        self.builder = builder  # what the producer's send_batch takes
        # DefaultRecordBatchBuilder.append(offset, timestamp, key, value, headers): None when
        # the batch is full (never for its first record).
        self.append = builder._builder.append
        self.count = 0  # records appended: the next one's offset delta

    def handed_over(self) -> Any:
        """The BatchBuilder, counting its records (the producer's sequence numbers do)."""
        self.builder._relative_offset = self.count
        return self.builder


class TransactionalSink:
    """Records on their way to Kafka, gathered into one record batch per topic partition.

    `add` and `add_values` only append (no await: a fetch's records are applied in one go);
    full batches are handed to the producer by `ship`, the rest by `flush`. Each batch costs
    one future instead of one per record. Keys are placed with Kafka's default partitioner, over
    partition counts learnt by `learn_partitions` before the first record. A record bigger than
    its topic takes (key, value and headers: `room`, or `rooms[topic]` where a topic takes
    more) is refused with RecordTooLarge: the broker would refuse its whole batch, and the
    transaction with it.
    """

    def __init__(
        self, producer: aiokafka.AIOKafkaProducer, room: int, rooms: dict[str, int] | None = None
    ) -> None:
        self.producer = producer
        self.room = room
        self.rooms = rooms or {}  # every one at least `room`
        self.batches: dict[tuple[str, int], _Batch] = {}
        self.full: list[tuple[tuple[str, int], _Batch]] = []
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
        value: bytes | None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue one record (sent at the latest by the next `flush`); RecordTooLarge if its
        topic would refuse it."""
        size = record_size(key, value, headers)
        if size > self.room and size > (room := self.rooms.get(topic, self.room)):
            raise RecordTooLarge(topic, size, room)
        if partition is None:
            partition = key_hash(key) % self.partition_counts[topic] if key else 0
        slot = (topic, partition)
        batch = self.batches.get(slot) or self._open(slot)
        if batch.append(batch.count, timestamp_ms, key, value, headers or NO_HEADERS) is None:
            batch = self._full(slot, batch)
            batch.append(0, timestamp_ms, key, value, headers or NO_HEADERS)
        batch.count += 1

    def add_values(self, topic: str, key: bytes, values: list[bytes]) -> list[Refused]:
        """Queue one record per value, all with `key` (so on one partition), in order;
        returns those refused (RecordTooLarge), which are not queued, by their position."""
        if not values:
            return []
        room = self.rooms.get(topic, self.room)
        fits = room - len(key)  # the most a value may take
        refused: list[Refused] = []
        if max(map(len, values)) > fits:
            refused = [
                (at, RecordTooLarge(topic, len(value) + len(key), room))
                for at, value in enumerate(values)
                if len(value) > fits
            ]
            values = [value for value in values if len(value) <= fits]
        slot = (topic, key_hash(key) % self.partition_counts[topic])
        batch = self.batches.get(slot) or self._open(slot)
        append = batch.append
        count = batch.count
        for value in values:
            if append(count, None, key, value, NO_HEADERS) is None:
                batch.count = count
                batch = self._full(slot, batch)
                append = batch.append
                count = 0
                append(count, None, key, value, NO_HEADERS)
            count += 1
        batch.count = count
        return refused

    def _open(self, slot: tuple[str, int]) -> _Batch:
        batch = self.batches[slot] = _Batch(self.producer.create_batch())
        return batch

    def _full(self, slot: tuple[str, int], batch: _Batch) -> _Batch:
        # Full: shipped by the next `ship`; a new batch takes the slot.
        self.full.append((slot, batch))
        return self._open(slot)

    async def ship(self) -> None:
        """Hand the full batches to the producer."""
        full, self.full = self.full, []
        for slot, batch in full:
            await self._ship(slot, batch.handed_over())

    async def flush(self) -> None:
        """Send every batch and wait until the broker has them all."""
        await self.ship()
        batches, self.batches = self.batches, {}
        for slot, batch in batches.items():
            await self._ship(slot, batch.handed_over())
        pending, self.pending = self.pending, []
        if pending:
            await asyncio.gather(*pending)

    @property
    def empty(self) -> bool:
        """Nothing queued."""
        return not self.batches and not self.full

    def discard(self) -> None:
        """Forget what is queued and not yet handed over (its transaction is being aborted)."""
        self.batches = {}
        self.full = []
        self.pending = []
        self.opened_at = None

    async def _ship(self, slot: tuple[str, int], builder: Any) -> None:
        if self.opened_at is None:
            self.opened_at = time.monotonic()
        topic, partition = slot
        self.pending.append(await self.producer.send_batch(builder, topic, partition=partition))
