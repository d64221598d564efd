"""The Kafka sink: records batched per topic partition, and refused when their topic would."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from pipeline.sinks.kafka import RecordTooLarge, TransactionalSink
from pipeline.streaming.partitioning import key_hash

PARTITIONS = 4


class Producer:
    """What the sink needs of a transactional aiokafka producer: real record batches, and the
    batches it was handed, in order, as (topic, partition, [(offset, key, value)])."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, list[tuple[int, bytes | None, bytes | None]]]] = []
        self.counts: list[int] = []  # record_count() of each batch as it was handed over

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0, is_transactional=1)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        self.counts.append(batch.record_count())
        records = DefaultRecordBatch(bytes(batch._build()))
        self.sent.append((topic, partition, [(r.offset, r.key, r.value) for r in records]))
        return _delivered()


async def _delivered() -> None:
    """A delivery the brokers confirmed."""


def sink(room: int = 1000, batch_size: int = 16384, **rooms: int) -> TransactionalSink:
    queue = TransactionalSink(Producer(batch_size), room, rooms)  # type: ignore[arg-type]
    asyncio.run(queue.learn_partitions(["enriched", "partner"]))
    return queue


def sent(queue: TransactionalSink) -> list[tuple[str, int, list[Any]]]:
    asyncio.run(queue.flush())
    return queue.producer.sent  # type: ignore[attr-defined, no-any-return]


def test_a_record_that_fits_its_topic_is_queued() -> None:
    queue = sink()
    queue.add("enriched", b"k" * 10, b"v" * 990, partition=0)
    assert not queue.empty
    assert sent(queue) == [("enriched", 0, [(0, b"k" * 10, b"v" * 990)])]
    assert queue.empty


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [(None, 1001, None), (b"k", 1000, None), (b"k", 900, [("origin", b"h" * 94)])],
    ids=["value", "key-and-value", "with-headers"],
)
def test_a_record_over_its_topic_room_is_refused_not_queued(
    key: bytes | None, value: int, headers: list[tuple[str, bytes]] | None
) -> None:
    queue = sink()
    with pytest.raises(RecordTooLarge) as refused:
        queue.add("enriched", key, b"v" * value, partition=0, headers=headers)
    assert (refused.value.topic, refused.value.size, refused.value.room) == (
        "enriched",
        1001,
        1000,
    )
    assert str(refused.value) == "1001 bytes, over the 1000 a record may have on topic 'enriched'"
    assert queue.empty


def test_a_topic_with_more_room_takes_bigger_records() -> None:
    queue = sink(changelog=5000)
    queue.add("changelog", b"k", b"v" * 4999, partition=0)
    with pytest.raises(RecordTooLarge):
        queue.add("changelog", b"k", b"v" * 5000, partition=0)
    with pytest.raises(RecordTooLarge):
        queue.add("enriched", b"k", b"v" * 4999, partition=0)


def test_a_keyed_record_goes_to_the_partition_of_its_key() -> None:
    queue = sink()
    for key in (b"dev-1", b"dev-2", b"dev-3"):
        queue.add("enriched", key, b"v")
    placed = {records[0][1]: partition for _, partition, records in sent(queue)}
    assert placed == {key: key_hash(key) % PARTITIONS for key in (b"dev-1", b"dev-2", b"dev-3")}


def test_values_of_a_key_are_queued_in_order_on_its_partition() -> None:
    queue = sink()
    queue.add_values("partner", b"dev-1", [b"a", b"b"])
    queue.add("partner", b"dev-1", b"c")
    queue.add_values("partner", b"dev-1", [b"d"])
    partition = key_hash(b"dev-1") % PARTITIONS
    assert sent(queue) == [
        (
            "partner",
            partition,
            [(0, b"dev-1", b"a"), (1, b"dev-1", b"b"), (2, b"dev-1", b"c"), (3, b"dev-1", b"d")],
        )
    ]
    assert queue.producer.counts == [4]  # type: ignore[attr-defined]


def test_a_full_batch_is_shipped_and_the_next_goes_on_in_order() -> None:
    queue = sink(batch_size=300)
    values = [b"%03d" % n + b"v" * 60 for n in range(12)]
    queue.add_values("partner", b"dev-1", values[:6])
    for value in values[6:]:
        queue.add("partner", b"dev-1", value)
    asyncio.run(queue.ship())  # only the full batches
    shipped = len(queue.producer.sent)  # type: ignore[attr-defined]
    batches = sent(queue)
    assert 1 <= shipped < len(batches)
    assert [value for _, _, records in batches for _, _, value in records] == values
    for _, _, records in batches:  # every batch numbers its own records from 0
        assert [offset for offset, _, _ in records] == list(range(len(records)))
    assert queue.producer.counts == [len(r) for _, _, r in batches]  # type: ignore[attr-defined]


def test_values_over_their_topic_room_are_refused_by_position_and_the_rest_queued() -> None:
    queue = sink(room=100)
    refused = queue.add_values("partner", b"k" * 10, [b"a", b"v" * 91, b"b", b"v" * 90])
    assert [(at, exc.size, exc.room, exc.topic) for at, exc in refused] == [
        (1, 101, 100, "partner")
    ]
    assert [value for _, _, records in sent(queue) for _, _, value in records] == [
        b"a",
        b"b",
        b"v" * 90,
    ]


def test_discarded_records_are_never_sent() -> None:
    queue = sink()
    queue.add_values("partner", b"dev-1", [b"a"])
    queue.discard()
    assert queue.empty
    assert sent(queue) == []
