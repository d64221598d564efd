"""Device state on the real broker: a device quiet past `device_ttl_days` leaves the table
with a tombstone in its changelog, a restart does not bring it back, and when it returns its
session numbering starts again."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.config import load_config
from pipeline.kafka.topics import changelog_topic
from pipeline.streaming.codec import table_key
from tests.integration.harness import Pipeline, consume, produce

pytestmark = pytest.mark.kafka

TTL_S = 4.0


async def changelog_of(
    pipeline: Pipeline, key: bytes, until_tombstone_s: float
) -> list[bytes | None]:
    """The values written to the changelog under `key`, in order, read (read_committed) until
    a tombstone comes or the time is up."""
    topic = changelog_topic(load_config(pipeline.config_path, env={}))
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=pipeline.bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        group_id=None,
        metadata_max_age_ms=1000,
    )
    values: list[bytes | None] = []
    await consumer.start()
    deadline = time.monotonic() + until_tombstone_s
    try:
        while time.monotonic() < deadline and None not in values:
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                values.extend(m.value for m in messages if m.key == key)
    finally:
        await consumer.stop()
    return values


def sessions_of(pipeline: Pipeline, count: int) -> list[dict[str, object]]:
    topic = pipeline.topic("sessions")
    records = asyncio.run(
        consume(pipeline.bootstrap, [topic], lambda r: len(r[topic]) >= count, 60)
    )
    return [orjson.loads(v) for v in records[topic]]


def test_a_quiet_device_is_evicted_with_a_tombstone_and_returns_numbered_from_one(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(worker={"device_ttl_days": TTL_S / 86_400})
    now = time.time_ns() // 1_000_000

    def event(event_id: str, kind: str, ts: int) -> tuple[bytes, bytes]:
        body = {"event_id": event_id, "app_id": "a", "device_id": "d", "type": kind, "ts": ts}
        return b"d", orjson.dumps(body)

    pipeline.start_worker()
    launched = [event("e1", "app_launch", now), event("e2", "app_terminate", now + 10)]
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), launched))
    first = sessions_of(pipeline, 2)
    assert [(s["type"], s["session_number"]) for s in first] == [
        ("session_start", 1),
        ("session_end", 1),
    ]
    values = asyncio.run(changelog_of(pipeline, table_key("a", "d"), 60))
    assert values and values[-1] is None, pipeline.worker_log()
    assert values[0] is not None  # its state was written before it was evicted

    pipeline.stop_workers(signal.SIGTERM)  # the restart reads the table from the changelog
    pipeline.start_worker()
    later = time.time_ns() // 1_000_000
    asyncio.run(
        produce(pipeline.bootstrap, pipeline.topic("raw"), [event("e3", "app_launch", later)])
    )
    sessions = sessions_of(pipeline, 3)
    assert (sessions[2]["type"], sessions[2]["session_number"]) == ("session_start", 1)
    assert sessions[2]["session_id"] != first[0]["session_id"]
