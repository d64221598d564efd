"""Whole fetches of the input topics for a Faust app, instead of one message at a time.

Faust delivers every message through its fetcher, conductor, channel queue and stream, awaiting
twice per message (`Consumer._drain_messages` -> `wait_first`): measured alone, about 61 us of
CPU per message, which capped the worker near 43k events/s before it did any work (see
BENCHMARKS.md). Here the app's consumer hands each fetched run of records of the topics named
in `bulk_topics` to one handler in a single call.

The table's changelog, while Faust's recovery reads it, is applied a whole fetch at a time too
(`FetchConsumer._apply_recovering`): through the per-message path recovery ran at ~7,000
records/s. A fetch's records below the partition's highwater are written to the table's store
at once as Faust's `apply_changelog_batch` writes them (`stores.apply_changelog`: one RocksDB
WriteBatch, then the store's persisted offset), and recovery's read offset of the partition is
moved past them, as Faust's `Recovery._slurp_changelogs` would have done record by record. The
record at the highwater (the last one recovery waits for) and any after it still go Faust's
way, so Faust's own code sees its recovery end. So does every record of a partition Faust is not
recovering as an active (standbys: the worker has none), or of which Faust still has records to
apply (the per-message path then keeps the order). Everything else Faust reads goes its way.

What stays Faust's: the consumer group, assignment and rebalances, seeking to the committed
offsets, the table and its changelog recovery, flow control. What the handler owns: offsets
(it commits them itself, in its transactions) and the order of a partition's records.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar

import faust
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from pipeline.streaming.stores import apply_changelog

# Called with a partition and its fetched records, in offset order.
FetchHandler = Callable[[TP, Sequence[ConsumerRecord]], Awaitable[None]]


class FetchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with whole-fetch delivery of its app's `bulk_topics`."""

    async def _drain_messages(self, fetcher: Any) -> None:
        app: Any = self.app
        handler: FetchHandler | None = getattr(app, "bulk_handler", None)
        if handler is None:
            await super()._drain_messages(fetcher)
            return
        bulk_topics: frozenset[str] = app.bulk_topics
        pending: set[TP] = app.fetch_pending
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                pending.update(tp for tp in records or () if tp.topic in bulk_topics)
                await asyncio.sleep(0)  # a fetch may come back at once: let others run
                if not records or self.should_stop:
                    pending.clear()
                    continue
                generation = self.app.consumer_generation_id
                try:
                    for tp, batch in records.items():
                        # As Faust's getmany: stop at a rebalance; its seek fetches them again.
                        if not self.flow_active or self.app.consumer_generation_id != generation:
                            break
                        if active is not None and tp not in active:
                            continue
                        if tp.topic in bulk_topics:
                            await handler(tp, batch)
                            pending.discard(tp)
                            # Faust's stall detector reads this (set by its streams, bypassed).
                            self.app.monitor.stream_inbound_time[tp] = time.monotonic()
                        else:
                            rest = self._apply_recovering(tp, batch)
                            if rest:
                                await self._deliver_each(tp, rest)
                finally:
                    pending.clear()
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise

    def _apply_recovering(
        self, tp: TP, batch: Sequence[ConsumerRecord]
    ) -> Sequence[ConsumerRecord]:
        """While Faust recovers `tp` (a changelog partition of an active table), write the
        records of `batch` before its highwater to the table's store at once, and count them
        read as Faust's recovery does; returns the records left for Faust's own path (all of
        `batch` when the partition is not being recovered so)."""
        recovery: Any = self.app.tables.recovery  # type: ignore[attr-defined]
        if not recovery.in_recovery or tp not in recovery.active_tps:
            return batch  # standbys too: Faust reads them past recovery, record by record
        highwater: int | None = recovery.active_highwaters.get(tp)
        applied: int | None = recovery.active_offsets.get(tp)
        table = recovery.tp_to_table.get(tp)
        if highwater is None or applied is None or table is None:
            return batch
        delivered = self._read_offset.get(tp)
        if delivered is not None and applied < delivered:
            return batch  # Faust has records of tp still to apply: they must go first
        if table._on_changelog_event is not None:
            return batch  # it wants each record
        # Faust applies a record above the offset it has read, and the highwater is the last
        # record it waits for: that one, and any after it, go its way.
        first = bisect.bisect_right(batch, applied, key=_offset)
        end = bisect.bisect_left(batch, highwater, lo=first, key=_offset)
        if first == end:
            return batch[first:]
        recovery.flush_buffers()  # what Faust holds of this partition is written first
        apply_changelog(table, tp, batch[first:end])
        last = batch[end - 1].offset
        recovery.active_offsets[tp] = last
        self._read_offset[tp] = last
        # (Faust's recovery logs, past 30 s, partitions it got no record of)
        recovery._active_events_received_at[tp] = time.monotonic()
        return batch[end:]

    async def _deliver_each(self, tp: TP, batch: Sequence[ConsumerRecord]) -> None:
        # Faust's own path for its topics (the changelog): message by message, skipping what it
        # has read already, as its _drain_messages does.
        read_offset = self._read_offset
        for record in batch:
            last = read_offset[tp]
            if last is not None and record.offset < last:
                continue
            await self.wait_first(
                self.callback(self._to_message(tp, record)), self.suspend_flow.wait()
            )
            read_offset[tp] = record.offset


def _offset(record: ConsumerRecord) -> int:
    return record.offset


class FetchTransport(faust_aiokafka.Transport):
    """The aiokafka transport, with the whole-fetch consumer."""

    Consumer: ClassVar[type[FetchConsumer]] = FetchConsumer


class FetchApp(faust.App):
    """A Faust app whose consumer delivers whole fetches of some topics to one handler."""

    bulk_topics: frozenset[str] = frozenset()
    bulk_handler: FetchHandler | None = None
    # Told when the app or any of its services (consumer, tables, agents...) crashes: Faust
    # itself would only mark them crashed and leave the process running, doing nothing.
    crash_handler: Callable[[BaseException], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Partitions whose records were fetched (the consumer's position is past them) but
        # not yet handed to the handler.
        self.fetch_pending: set[TP] = set()

    def _new_transport(self) -> Any:
        return FetchTransport(self.conf.broker_consumer, self)

    def _crash(self, reason: BaseException) -> None:
        # mode calls this on the app for its own crash and for a crash of any service below it.
        super()._crash(reason)
        if self.crash_handler is not None:
            self.crash_handler(reason)

    def note_committed(self, tps: Iterable[TP]) -> None:
        """The handler committed offsets of `tps` itself: tell Faust's stall detector, which
        would otherwise log that nothing was committed since start once a backlog lasts over
        `broker_commit_livelock_soft_timeout`."""
        consumer: Any = self.consumer
        committed_at = consumer._thread.tp_last_committed_at
        now = time.monotonic()
        for tp in tps:
            committed_at[tp] = now

    def deliver_fetches(self, topics: Sequence[str], handler: FetchHandler) -> None:
        """Send every fetched run of records of `topics` to `handler`, not to agents.

        The topics still need an agent each: Faust subscribes to the topics agents read.
        """
        self.bulk_topics = frozenset(topics)
        self.bulk_handler = handler
