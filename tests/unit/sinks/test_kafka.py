"""The Kafka sink: records batched per topic partition, and refused when their topic would."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.sinks.kafka import RecordTooLarge, TransactionalSink


class Batch:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, **record: Any) -> bool:
        self.records.append(record)
        return True


class Producer:
    def create_batch(self) -> Batch:
        return Batch()


def sink(room: int = 1000, **rooms: int) -> TransactionalSink:
    return TransactionalSink(Producer(), room, rooms)  # type: ignore[arg-type]


def test_a_record_that_fits_its_topic_is_queued() -> None:
    queue = sink()
    queue.add("enriched", b"k" * 10, b"v" * 990, partition=0)
    assert not queue.empty


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
