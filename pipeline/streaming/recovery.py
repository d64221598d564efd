"""Getting back to a consistent state: after a restart, and when Faust's recovery needs help.

- `fence_previous_instance`: before Faust recovers the table, abort what a killed predecessor
  left open, and end the changelog with a record Faust can read.
- `write_checkpoint_markers`: end changelog partitions with a non-transactional record
  (`CHECKPOINT_KEY`): Faust's recovery waits for a record at a partition's last offset, which
  would otherwise be a transaction marker.
- `stuck_changelog_partitions`: the changelog partitions Faust's recovery waits on for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

import aiokafka
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP

from pipeline.config import Config
from pipeline.kafka.clients import marker_producer, transactional_producer
from pipeline.kafka.topics import changelog_topic
from pipeline.streaming.codec import CHECKPOINT_KEY


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


async def stuck_changelog_partitions(app: Any) -> list[TP]:
    """Changelog partitions Faust's recovery waits on though it has read all there is.

    Faust recovers a changelog partition until it has read a record at the partition's last
    offset; when that offset is a marker (a worker killed for good left an aborted
    transaction, aborted by the broker after `transaction_timeout_ms`), it waits forever.
    Stuck: the consumer has read past everything up to that offset and no record came.
    """
    recovery: Any = app.tables.recovery
    if not recovery.in_recovery:  # (the app counts as rebalancing until recovery ends)
        return []
    consumer = app.consumer
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
    return stuck
