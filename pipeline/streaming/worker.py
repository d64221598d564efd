"""The streaming worker: the async adapter between Faust and the streaming core.

Topics in, a table of device states, an agent per input topic, an expiry timer, and sinks.
Every decision about records is made by the streaming core (`pipeline.streaming.core`, no
awaits); this adapter feeds it fetches and ticks, owns the producers and transactions
(`pipeline.streaming.checkpoint` commits them), and recovers from failures.

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
- Faust reads its changelog and inputs with isolation_level=read_committed
  (`pipeline.streaming.app`): it would otherwise recover state from aborted transactions.
- Devices are processed on the partition their device id hashes to (Kafka's default murmur2
  partitioner). A message found elsewhere (keyed otherwise, or not keyed) is validated, then
  its events are forwarded to an internal repartition topic on the right partition.

No message stops the worker (SPEC section 2):
- Every topic holds the largest record the worker writes there (`pipeline.kafka.topics` creates
  them so, and the worker refuses to start on one that cannot). A record that would not fit
  even so is caught as it is queued: an output record becomes a `too_large` dead letter, a
  forwarded batch of events is split.
- A transient Kafka failure (brokers unreachable, a request timed out, a leader or coordinator
  moving) that cuts a fetch, tick or checkpoint short aborts the open transaction and goes back
  to the last commit: devices changed since are put back and the messages since are read
  again. The worker never exits for it.
- Anything else (fenced by a newer instance, refused by the brokers, a bug), and a crash of any
  Faust service, ends the process with a non-zero exit code within FATAL_EXIT_S
  (`pipeline.streaming.app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, MutableMapping, Sequence
from typing import Any, cast

from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from pipeline.config import Config
from pipeline.kafka.clients import is_transient
from pipeline.kafka.outages import client_noise
from pipeline.kafka.topics import TABLE_NAME, changelog_topic, repartition_topic, required_configs
from pipeline.observe.metrics import WorkerMetrics
from pipeline.sinks.kafka import TransactionalSink
from pipeline.streaming.checkpoint import Checkpoint
from pipeline.streaming.core import StreamingCore
from pipeline.streaming.fetches import FetchApp
from pipeline.streaming.progress import ReadProgress
from pipeline.streaming.recovery import stuck_changelog_partitions, write_checkpoint_markers
from pipeline.streaming.stores import ROCKSDB, ROCKSDB_OPTIONS, RocksTable, bound_memory
from pipeline.streaming.transactions import Producers
from pipeline.vocabulary import wall_ms

log = logging.getLogger("sessionize.worker")

# After a transient failure, the next try waits this long, doubling up to the most.
RETRY_BACKOFF_S = (0.5, 5.0)


class SessionWorker:
    """Feeds the streaming core input fetches and timer ticks, inside Kafka transactions."""

    def __init__(self, app: FetchApp, config: Config, partitions: int) -> None:
        self.app = app
        self.config = config
        self.topics = config.topics
        # Created by pipeline.kafka.topics before Faust starts; Faust would create them alike.
        required = required_configs(config)
        self.table = app.Table(
            TABLE_NAME,
            key_type=bytes,
            value_type=bytes,
            partitions=partitions,
            default=None,
            extra_topic_configs=required[changelog_topic(config)],
            options=dict(ROCKSDB_OPTIONS) if config.worker.store == ROCKSDB else None,
        )
        if config.worker.store == ROCKSDB:  # (the store exists once asked for; no database yet)
            bound_memory(self.table.data, config.worker.rocksdb_memory_mb)
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
        self.core = StreamingCore(
            config, partitions, self.repartition_topic.get_topic_name(), wall_ms
        )
        self.stored: MutableMapping[bytes, bytes] | None = None  # the table's store
        self.metrics = WorkerMetrics(config)  # counts what the core applies and commits
        self.metrics.instrument(self.core)
        self.retry_backoff_s = RETRY_BACKOFF_S[0]
        self.recovering: BaseException | None = None  # a failure still to be recovered from
        self.checkpoint_every = config.worker.checkpoint_every
        self.committed_at = time.monotonic()
        self.lock = asyncio.Lock()
        self.producers: Producers | None = None  # with the first message or tick
        self.checkpointer: Checkpoint | None = None
        self.progress = ReadProgress(
            app, config, self.core, self.repartition_topic.get_topic_name()
        )
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
            expected = await self.progress.next_offset(tp)
            first = records[0].offset
            if first > expected:
                await self.progress.fill_gap(tp, expected, first)
                expected = first
            self.core.apply(tp, records, expected)
            self.progress.processed(tp)
            await self._sink().ship()
            if self.core.uncommitted_messages >= self.checkpoint_every:
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
            timed_out = self.producers is not None and self.producers.timed_out(exc)
            if not (is_transient(exc) or timed_out):
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
        if self.stored is None:  # (Faust creates its store when it starts)
            self.stored = self.core.stored = self._table_store()
        if self.recovering is not None:
            await self._recover()
        await self._ensure_producer()

    def _table_store(self) -> MutableMapping[bytes, bytes]:
        data: Any = self.table.data
        if self.config.worker.store == ROCKSDB:
            changelog = self.table.changelog_topic.get_topic_name()
            return RocksTable(data, self.core.partitions, changelog)
        return cast(MutableMapping[bytes, bytes], data)

    def _markers_delivered(self, delivered: list[Any]) -> None:
        # The checkpoint markers after a commit are in the changelog: the store is applied
        # up to them.
        if isinstance(self.stored, RocksTable):
            self.stored.persist_offsets(delivered)

    async def _recover(self) -> None:
        """Go back to the last commit: abort the open transaction, put back the devices changed
        since, and forget how far the partitions were read, so that the next fetch or tick
        reads the messages since the last commit again (see `ReadProgress.fill_gap`)."""
        self.core.rollback()
        self.metrics.rolled_back()
        if self.producers is not None:
            await self.producers.abort()
        self.recovering = None

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

    async def _ensure_producer(self) -> None:
        # Once per worker, or after a fenced one: records queued in a sink belong to its
        # producer's transaction.
        if self.producers is None:
            changelog = self.table.changelog_topic.get_topic_name()
            topics = self.topics
            keyed = {topics.sessions, topics.enriched, topics.deadletter}
            keyed.update(self.core.writer.partner_topics.values())
            self.producers = Producers(self.config, changelog, keyed)
            self.checkpointer = Checkpoint(
                self.core, changelog, self.app.conf.id, self._committed, self._markers_delivered
            )
        self.core.writer.sink = self.metrics.counting(await self.producers.ensure())

    def _sink(self) -> TransactionalSink:
        # Records are batched per partition and delivered by the checkpoint, before the
        # transaction commits.
        assert self.producers is not None and self.producers.sink is not None
        return self.producers.sink

    # Checkpoints

    async def checkpoint(self) -> None:
        """Commit the transaction: records sent so far, changed devices, consumed offsets."""
        async with self.lock, self._whole():
            if not self.stopped and self.recovering is None:
                await self._commit()

    async def _commit(self) -> None:
        producers = self.producers
        if producers is None or producers.producer is None or self.broken:
            return
        assert producers.sink is not None and self.checkpointer is not None
        started = time.monotonic()
        await self.checkpointer.commit(producers.producer, producers.sink, producers.markers)
        self.metrics.commit_duration.observe(time.monotonic() - started)

    def _committed(self, offsets: dict[Any, int]) -> None:
        # The checkpoint's transaction committed.
        self.committed_at = time.monotonic()
        self.metrics.committed()
        self.app.note_committed(offsets)
        self.retry_backoff_s = RETRY_BACKOFF_S[0]
        client_noise.back()

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
        core = self.core
        actives = self._active_partitions()
        if actives != core.indexed:
            for _ in core.reindexing(actives):  # (a big table: heartbeats go on meanwhile)
                await asyncio.sleep(0)
        for partition in actives:
            clock = core.clocks[partition]
            clock.caught_up = await self.progress.caught_up(partition)
            log.debug(
                "partition %d: caught up %s, clock %d",
                partition,
                clock.caught_up,
                clock.now(wall_ms()),
            )
            core.expire(partition)
        core.evict()  # a slice of the sweep for devices past their time to live
        sink = self.producers.sink if self.producers is not None else None
        pending = core.pending or (sink is not None and not sink.empty)
        if pending and time.monotonic() - self.committed_at >= self.config.worker.commit_interval_s:
            await self._commit()

    async def _probe(self) -> None:
        # The clients said Kafka went away: whether it answers again (ends the outage's lines).
        producer = self.producers.producer if self.producers is not None else None
        if producer is None:
            return
        with contextlib.suppress(Exception):
            answered = await asyncio.wait_for(producer.client.force_metadata_update(), 2.0)
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
        """Let Faust's recovery finish on changelog partitions that end in a transaction marker,
        by giving each a checkpoint record to read."""
        stuck = await stuck_changelog_partitions(self.app)
        if stuck:
            await self._ensure_producer()
            assert self.checkpointer is not None and self.producers is not None
            changelog = self.checkpointer.changelog
            partitions = {tp.partition for tp in stuck if tp.topic == changelog}
            log.warning("changelog partitions %s end in a transaction marker", sorted(partitions))
            self.checkpointer.markers_sent += await write_checkpoint_markers(
                self.producers.markers, changelog, partitions
            )

    def _ready(self) -> bool:
        recovery: Any = self.app.tables.recovery  # type: ignore[attr-defined]
        return not self.app.rebalancing and not recovery.in_recovery

    def _active_partitions(self) -> frozenset[int]:
        names = {self.topics.input, self.repartition_topic.get_topic_name()}
        actives = self.app.assignor.assigned_actives()
        return frozenset(tp.partition for tp in actives if tp.topic in names)

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
            if self.checkpointer is not None:
                await self.checkpointer.wait_for_markers()
            if self.producers is not None:
                await self.producers.stop()
            await self.progress.close()

    async def on_revoked(self, revoked: Iterable[TP]) -> None:
        """Partitions leave this worker: write what is pending first."""
        await self.checkpoint()
        self.core.forget_positions(revoked)
