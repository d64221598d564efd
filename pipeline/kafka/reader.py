"""Reading topics back, as `sessionize consume` and the demo do: committed records only, up to
the end offsets seen at the start or for as long as asked."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.kafka.connection import start_client, unknown_topic

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord


async def read_topics(
    config: Config,
    topics: Sequence[str],
    on_record: Callable[[ConsumerRecord], None],
    *,
    timeout_s: float,
    from_beginning: bool = True,
    follow: bool = False,
    limit: int | None = None,
    group: str | None = None,
    until: Callable[[], bool] | None = None,
) -> int:
    """Read `topics` (read_committed) and hand each record to `on_record`; returns the count.

    Without `follow`, stops once caught up with the end offsets seen at the start; with it,
    at `limit` records, when `until()` is true, or never. With `group`, reads as that consumer
    group: starts at its committed offsets and commits what was handed over. KafkaUnavailable
    when no broker answers within `timeout_s`, a topic is unknown or none of it is assigned.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from pipeline.kafka.connection import KafkaUnavailable

    consumer = AIOKafkaConsumer(
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
        client_id="sessionize-consume",
        **config.kafka.client_options(),
    )
    await start_client(consumer, config, timeout_s)
    count = 0
    try:
        existing = await consumer.topics()
        for topic in topics:
            if topic not in existing:
                raise unknown_topic(topic, config)
        consumer.subscribe(topics=list(topics))
        deadline = time.monotonic() + timeout_s
        ends: dict[TopicPartition, int] | None = None
        while limit is None or count < limit:
            if ends is None and consumer.assignment():
                ends = await consumer.end_offsets(sorted(consumer.assignment()))
            if ends is None and time.monotonic() > deadline:
                raise KafkaUnavailable(f"no partitions of {', '.join(topics)} were assigned")
            if ends is not None and not follow and await _caught_up(consumer, ends):
                break
            if until is not None and until():
                break
            left = None if limit is None else limit - count
            batches = await consumer.getmany(timeout_ms=200, max_records=left)
            committed: dict[TopicPartition, int] = {}
            for partition, records in batches.items():
                for record in records:
                    on_record(record)
                    count += 1
                    committed[partition] = record.offset + 1
            if group is not None and committed:
                await consumer.commit(committed)
    finally:
        await consumer.stop()
    return count


async def _caught_up(consumer: Any, ends: dict[Any, int]) -> bool:
    for partition, end in ends.items():
        if await consumer.position(partition) < end:
            return False
    return True
