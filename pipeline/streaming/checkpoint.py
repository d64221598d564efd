"""A checkpoint: what one commit of the worker's transaction does, in order.

Records emitted since the last commit are in the open transaction already (the sink ships
them as they fill batches). A checkpoint then

1. waits for the previous checkpoint's changelog markers to be delivered;
2. writes every device changed since the last commit to the table's changelog, once, and a
   tombstone for every device evicted;
3. flushes the sink: every record of the transaction is with the brokers;
4. adds the consumed offsets to the transaction;
5. commits it: outputs, states and offsets become visible together, or not at all;
6. tells the core (the table now holds those states) and the adapter;
7. ends each changelog partition written with a checkpoint marker (not waited for; once
   delivered, a RocksDB store records how far the changelog is applied);
8. begins the next transaction.

A failure at any step leaves the transaction uncommitted: the adapter aborts it and goes back
to the last commit (`StreamingCore.rollback`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiokafka
from aiokafka.structs import TopicPartition

from pipeline.sinks.kafka import RecordTooLarge, TransactionalSink
from pipeline.streaming.core import StreamingCore
from pipeline.streaming.recovery import write_checkpoint_markers

log = logging.getLogger("sessionize.worker")

# Told the offsets a commit made visible, once it is made.
CommitListener = Callable[[dict[Any, int]], None]
# Told where a marker after a commit landed (its RecordMetadata), as soon as it is delivered.
MarkersListener = Callable[[list[Any]], None]


class Checkpoint:
    """Commits the streaming core's transaction (see the module's steps)."""

    def __init__(
        self,
        core: StreamingCore,
        changelog: str,
        group_id: str,
        on_commit: CommitListener,
        on_markers: MarkersListener | None = None,
    ) -> None:
        self.core = core
        self.changelog = changelog
        self.group_id = group_id
        self.on_commit = on_commit
        self.on_markers = on_markers
        self.markers_sent: list[Awaitable[Any]] = []  # deliveries of the last markers

    async def commit(
        self,
        producer: aiokafka.AIOKafkaProducer,
        sink: TransactionalSink,
        markers: aiokafka.AIOKafkaProducer | None,
    ) -> None:
        """Commit the open transaction of `producer` (records in `sink`), begin the next."""
        core = self.core
        await self.wait_for_markers()
        saved, written = self.write_changes(sink)
        await sink.flush()
        offsets = core.uncommitted
        if offsets:
            partitions = {TopicPartition(topic, p): o for (topic, p), o in offsets.items()}
            await producer.send_offsets_to_transaction(partitions, self.group_id)
        await producer.commit_transaction()
        log.debug("committed offsets %s", {f"{t}:{p}": o for (t, p), o in offsets.items()})
        # Only now the table holds these states: a failed commit goes back to the ones before.
        core.committed(saved)
        self.on_commit(offsets)
        # Markers only keep recovery from waiting on the last offset: not worth a round trip
        # here (the next commit, or the shutdown, makes sure they went out).
        self.markers_sent = await write_checkpoint_markers(markers, self.changelog, written)
        if self.on_markers is not None:
            for sent in self.markers_sent:
                asyncio.ensure_future(sent).add_done_callback(self._delivered)
        await producer.begin_transaction()
        sink.opened_at = None

    def _delivered(self, sent: asyncio.Future[Any]) -> None:
        if self.on_markers is not None and not sent.cancelled() and sent.exception() is None:
            self.on_markers([sent.result()])

    async def wait_for_markers(self) -> None:
        """Wait until the markers written last are delivered."""
        markers, self.markers_sent = self.markers_sent, []
        if markers:
            await asyncio.gather(*markers)

    def write_changes(
        self, sink: TransactionalSink
    ) -> tuple[list[tuple[bytes, bytes | None]], set[int]]:
        """Queue the changes of the device table for the changelog: (key, value) of each
        device changed, (key, None) of each evicted (a tombstone), and the changelog
        partitions written."""
        saved: list[tuple[bytes, bytes | None]] = []
        written: set[int] = set()
        for key, partition, value in self.core.changes():
            try:
                sink.add(self.changelog, key, value, partition=partition)
            except RecordTooLarge as exc:
                log.error(
                    "device %s: its state is %s, not saved (a restart would find it as it "
                    "was at its last save)",
                    key.decode(errors="replace"),
                    exc,
                )
                continue
            saved.append((key, value))
            written.add(partition)
        return saved, written
