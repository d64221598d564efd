"""The worker's producers and its open transaction: started, aborted, replaced, stopped.

One transactional producer (its records batched by a `TransactionalSink`) whose transaction is
always open while the worker runs, and a plain producer for the changelog's checkpoint markers.
A fenced producer, or one caught mid-commit, is not reused: the next `ensure` starts a new one,
whose epoch aborts what the old one left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

import aiokafka
from aiokafka.errors import ProducerFenced
from aiokafka.producer.transaction_manager import TransactionState

from pipeline.config import Config
from pipeline.kafka.clients import (
    TRANSACTION_TIMEOUT_MS,
    marker_producer,
    quiet_client_logs,
    transactional_producer,
)
from pipeline.kafka.topics import (
    RECORD_FRAMING_BYTES,
    changelog_max_message_bytes,
    max_message_bytes,
)
from pipeline.sinks.kafka import TransactionalSink


class Producers:
    """The transactional producer with its sink, and the marker producer."""

    def __init__(self, config: Config, changelog: str, keyed_topics: Iterable[str]) -> None:
        self.config = config
        self.changelog = changelog
        self.keyed_topics = set(keyed_topics)  # topics records are keyed to by the sink
        self.producer: aiokafka.AIOKafkaProducer | None = None
        self.markers: aiokafka.AIOKafkaProducer | None = None
        self.sink: TransactionalSink | None = None

    async def ensure(self) -> TransactionalSink:
        """The producers started and a transaction open (once per worker, or after a
        fenced producer); returns the sink of the open transaction."""
        if self.sink is not None:
            return self.sink
        quiet_client_logs()
        if self.markers is None:
            markers = marker_producer(self.config)
            try:
                await markers.start()
            except BaseException:
                await _stop(markers)
                raise
            self.markers = markers
        producer = transactional_producer(self.config)
        try:
            await producer.start()
            await producer.begin_transaction()
            sink = TransactionalSink(
                producer,
                max_message_bytes(self.config) - RECORD_FRAMING_BYTES,
                {self.changelog: changelog_max_message_bytes(self.config) - RECORD_FRAMING_BYTES},
            )
            await sink.learn_partitions(self.keyed_topics)
        except BaseException:
            await _stop(producer)  # half started: the next try starts anew
            raise
        self.producer, self.sink = producer, sink
        return sink

    async def begin(self) -> None:
        """Begin the next transaction."""
        assert self.producer is not None and self.sink is not None
        await self.producer.begin_transaction()
        self.sink.opened_at = None

    async def abort(self) -> None:
        """Abort the open transaction, forgetting what its sink holds, and begin the next; or
        drop a producer that cannot (fenced, or mid-commit) for `ensure` to replace."""
        if self.producer is None or self.sink is None:
            return
        self.sink.discard()
        state = self.producer._txn_manager.state
        if state in (TransactionState.IN_TRANSACTION, TransactionState.ABORTABLE_ERROR):
            await self.producer.abort_transaction()  # waits for the brokers to answer
            await self.begin()
        elif state is TransactionState.READY:
            await self.begin()
        else:  # fenced, or mid-commit: a new producer, whose epoch aborts what was open
            producer, self.producer, self.sink = self.producer, None, None
            await _stop(producer)

    def timed_out(self, error: BaseException) -> bool:
        """`error` fenced the producer because the brokers aborted its transaction for lasting
        too long (so it goes after an outage); fenced within the timeout: a newer instance took
        over."""
        opened_at = self.sink.opened_at if self.sink is not None else None
        if not isinstance(error, ProducerFenced) or opened_at is None:
            return False
        return time.monotonic() - opened_at > TRANSACTION_TIMEOUT_MS / 1000

    async def stop(self) -> None:
        """Stop both producers (an open transaction stays open: the next start aborts it)."""
        for producer in (self.producer, self.markers):
            if producer is not None:
                await producer.stop()


async def _stop(producer: aiokafka.AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), 5.0)
