"""Sending raw messages to a topic, as `sessionize produce` and the demo do: the lines of a file
as fast as the producer batches them, or a live plan on time; counted, with a progress line."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, TextIO

import orjson

from pipeline.config import Config
from pipeline.kafka.connection import start_client, unknown_topic
from pipeline.vocabulary import wall_ms

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from pipeline.workload.live import LivePlan


class Progress:
    """A one-line progress display, redrawn with '\\r'; silent unless the stream is a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self.drawn_at = 0.0

    def update(self, fraction: float | None, messages: int, events: int) -> None:
        """Redraw, at most five times a second."""
        now = time.monotonic()
        if not self.enabled or now - self.drawn_at < 0.2:
            return
        self.drawn_at = now
        rate = events / max(now - self.started, 1e-6)
        bar = ""
        if fraction is not None:
            filled = round(min(max(fraction, 0.0), 1.0) * 30)
            bar = f" [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}"
        self.stream.write(f"\r{self.label}{bar}  {messages} sent  {rate:.0f} events/s\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """Clear the line."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


@dataclass(slots=True)
class ProduceStats:
    """What a produce run sent, and what the brokers confirmed or refused."""

    topic: str
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    events: int = 0
    started_ms: int = 0  # wall clock, epoch ms
    elapsed_s: float = 0.0
    first_error: str | None = None

    def summary_line(self) -> str:
        """One line for a person: sent, failed, events/s."""
        rate = self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0
        line = (
            f"sent {self.delivered} messages ({self.events} events) to {self.topic} "
            f"in {self.elapsed_s:.1f} s: {self.failed} failed, {rate:.0f} events/s"
        )
        return f"{line} (first error: {self.first_error})" if self.first_error else line


class Sender:
    """An aiokafka producer for one topic that counts deliveries and failures."""

    def __init__(self, producer: AIOKafkaProducer, stats: ProduceStats) -> None:
        self.producer = producer
        self.stats = stats

    async def send(self, key: bytes | None, value: bytes, events: int) -> None:
        """Queue one message (batched by the producer's linger); delivery is counted later."""
        from aiokafka.errors import KafkaError

        stats = self.stats
        stats.queued += 1
        stats.events += events
        try:
            delivery = await self.producer.send(stats.topic, value, key=key)
        except KafkaError as exc:
            self._failed(exc)
            return
        delivery.add_done_callback(self._delivered)

    def _delivered(self, delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled():
            self._failed(None)
        elif (error := delivery.exception()) is not None:
            self._failed(error)
        else:
            self.stats.delivered += 1

    def _failed(self, error: BaseException | None) -> None:
        self.stats.failed += 1
        if self.stats.first_error is None and error is not None:
            self.stats.first_error = f"{type(error).__name__}: {error}"


@contextlib.asynccontextmanager
async def open_sender(config: Config, topic: str, timeout_s: float) -> AsyncIterator[Sender]:
    """A started Sender for an existing `topic`; flushes and stops the producer on the way out.

    KafkaUnavailable when no broker answers within `timeout_s` or the topic does not exist.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        acks="all", linger_ms=20, max_batch_size=256 * 1024, **config.kafka.client_options()
    )
    await start_client(producer, config, timeout_s)
    stats = ProduceStats(topic, started_ms=wall_ms())
    started = time.monotonic()
    try:
        cluster = await producer.client.fetch_all_metadata()
        if topic not in cluster.topics():
            raise unknown_topic(topic, config)
        yield Sender(producer, stats)
        await producer.flush()
    finally:
        stats.elapsed_s = time.monotonic() - started
        await producer.stop()


def device_key(message: bytes) -> tuple[bytes | None, int]:
    """The Kafka key of a message (its device_id, if it is JSON with one) and its event count."""
    try:
        parsed = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None, 1
    if not isinstance(parsed, dict):
        return None, 1
    device_id = parsed.get("device_id")
    key = device_id.encode() if isinstance(device_id, str) else None
    events = parsed.get("events")
    return key, len(events) if isinstance(events, list) else 1


async def produce_lines(
    config: Config, topic: str, source: IO[bytes], total_bytes: int | None, timeout_s: float
) -> ProduceStats:
    """Send each non-empty line of `source` as one message, as fast as the producer batches."""
    progress = Progress(f"producing to {topic}")
    async with open_sender(config, topic, timeout_s) as sender:
        read = 0
        for line in source:
            read += len(line)
            message = line.rstrip(b"\r\n")
            if not message:
                continue
            key, events = device_key(message)
            await sender.send(key, message, events)
            stats = sender.stats
            progress.update(read / total_bytes if total_bytes else None, stats.queued, stats.events)
        progress.close()
    return sender.stats


async def produce_live(
    config: Config, topic: str, plan: LivePlan, timeout_s: float, label: str | None = None
) -> ProduceStats:
    """Send the plan's messages on time, stamped with the wall clock."""
    loop = asyncio.get_running_loop()
    progress = Progress(label or f"producing to {topic}")
    async with open_sender(config, topic, timeout_s) as sender:
        run_start_ms = wall_ms()
        started = loop.time()
        for message in plan.messages:
            wait = message.send_ms / 1000 - (loop.time() - started)
            if wait > 0.001:
                await asyncio.sleep(wait)
            await sender.send(message.key, plan.stamp(message, run_start_ms), message.events)
            stats = sender.stats
            progress.update(
                (loop.time() - started) * 1000 / plan.duration_ms, stats.queued, stats.events
            )
        wait = plan.duration_ms / 1000 - (loop.time() - started)
        if wait > 0:  # the run lasts its duration even when its last message is due earlier
            await asyncio.sleep(wait)
        progress.close()
    return sender.stats
