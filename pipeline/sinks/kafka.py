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
