"""How far each input partition is read and applied: committed offsets, gaps, caught up.

The streaming core knows the next offset it expects on each partition it has read since the
last commit (`StreamingCore.positions`); before that, it is the group's committed offset.
Records between the expected offset and a fetch (or the end of a partition) that never reached
the fetch handler are read directly (`GapReader`) and applied in order. A partition is caught
up when everything up to its end has been applied: its clock then follows the wall clock
(`pipeline.streaming.expiry`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiokafka
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.types import TP

from pipeline.config import Config
from pipeline.streaming.core import StreamingCore

log = logging.getLogger("sessionize.worker")


class ReadProgress:
    """The offsets of the input partitions, for the worker's fetches and ticks."""

    def __init__(
        self, app: Any, config: Config, core: StreamingCore, repartition_topic: str
    ) -> None:
        self.app = app
        self.core = core
        self.input_topic = config.topics.input
        self.repartition_topic = repartition_topic
        self.tick_s = config.worker.tick_s
        self.gaps = GapReader(config)
        self.processed_at: dict[TP, float] = {}  # monotonic time of the last processed message

    def processed(self, tp: TP) -> None:
        """A fetch of `tp` was applied."""
        self.processed_at[tp] = time.monotonic()

    async def next_offset(self, tp: TP) -> int:
        """The offset this worker must see next on `tp`: after its last, or the committed one."""
        known = self.core.positions.get(tp)
        if known is not None:
            return known
        committed = await self.gaps.committed(tp, self.app.conf.id)
        self.core.positions[tp] = committed
        return committed

    async def fill_gap(self, tp: TP, start: int, end: int) -> None:
        # Records between the last applied offset and a fetch (or the end of the partition)
        # that never reached on_fetch: read them ourselves, in order, before going on. Faust's
        # streams dropped such runs after a table recovery (their read-offset guard); fetches
        # bypass that guard, so this is a safety net. Transaction markers also leave gaps;
        # those read as nothing.
        recovered = 0
        async for records in self.gaps.read(tp, start, end):
            recovered += self.core.apply(tp, records, start)
        self.core.positions[tp] = end
        if recovered:
            log.warning(
                "read %d messages of %s the stream skipped (offsets %d-%d)",
                recovered,
                tp,
                start,
                end - 1,
            )

    async def caught_up(self, partition: int) -> bool:
        """Nothing left to read on the partition: everything fetched has been applied."""
        consumer = self.app.consumer
        pending = self.app.fetch_pending
        quiet_since = time.monotonic() - 2 * self.tick_s
        for topic in (self.input_topic, self.repartition_topic):
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
            position = await self.next_offset(tp)
            if position >= highwater:
                continue
            if self.processed_at.get(tp, 0) > quiet_since:
                return False  # still delivering
            # Fetched to the end, yet quiet short of it: transaction markers (they take offsets
            # too), or records on their way to on_fetch. Reading the rest settles which.
            await self.fill_gap(tp, position, highwater)
        return True

    async def close(self) -> None:
        """Stop the clients."""
        await self.gaps.close()


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

    async def read(self, tp: TP, start: int, end: int) -> AsyncIterator[list[ConsumerRecord]]:
        """The messages of `tp` from offset `start` up to (not including) `end`, a fetched
        run at a time."""
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
            records = [record for record in batch.get(partition, []) if record.offset < end]
            if records:
                yield records
            if len(records) < len(batch.get(partition, [])):
                return

    async def close(self) -> None:
        """Stop the clients."""
        if self.consumer is not None:
            await self.consumer.stop()
        if self.admin is not None:
            await self.admin.close()
