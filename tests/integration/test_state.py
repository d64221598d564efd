"""Device state on the real broker: a device quiet past `device_ttl_days` leaves the table
with a tombstone in its changelog, a restart does not bring it back, and when it returns its
session numbering starts again."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import AccessType, Options, Rdict

from pipeline.config import load_config
from pipeline.kafka.topics import changelog_topic
from pipeline.streaming.codec import CHECKPOINT_KEY, table_key
from tests.integration.harness import Pipeline, consume, produce

pytestmark = pytest.mark.kafka

TTL_S = 4.0
OFFSET_KEY = b"__faust\x00offset__"  # where Faust's RocksDB store keeps its changelog offset


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


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> the offset after its last record (transaction markers included)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def last_checkpoint_markers(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> offset of its last checkpoint marker (the records after a commit that say
    how far the changelog is; the transaction's own marker may land after it)."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    found: dict[int, int] = {}
    try:
        consumer.assign([TopicPartition(topic, p) for p in ends])
        for partition in ends:
            consumer.seek(TopicPartition(topic, partition), 0)
        read: dict[int, int] = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + 30
        while any(read[p] < ends[p] - 1 for p in ends) and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=300)).items():
                for message in messages:
                    read[tp.partition] = message.offset
                    if message.key == CHECKPOINT_KEY:
                        found[tp.partition] = message.offset
    finally:
        await consumer.stop()
    return found


def partition_dbs(pipeline: Pipeline) -> dict[int, Path]:
    """The worker's RocksDB database of each table partition (one worker, stopped)."""
    found = sorted((pipeline.directory / "data").glob("**/devices-*.db"))
    return {int(path.name.removesuffix(".db").rsplit("-", 1)[1]): path for path in found}


def stored_rows(pipeline: Pipeline) -> dict[int, list[tuple[bytes, bytes]]]:
    """Partition -> the (key, value) rows of its database, Faust's offset key and checkpoint
    markers left out."""
    rows = {}
    for partition, path in partition_dbs(pipeline).items():
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            rows[partition] = [
                (k, v) for k, v in db.items() if k != OFFSET_KEY and k != CHECKPOINT_KEY
            ]
        finally:
            db.close()
    return rows


def stored_offsets(pipeline: Pipeline) -> dict[int, int]:
    """Partition -> the changelog offset its database says it is applied up to."""
    offsets = {}
    for partition, path in partition_dbs(pipeline).items():
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            offset = db.get(OFFSET_KEY)
        finally:
            db.close()
        if offset is not None:
            offsets[partition] = int(offset)
    return offsets


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


def test_a_clean_stop_leaves_the_rocksdb_store_applied_to_the_end_of_its_changelog(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    # A restart on the same disk then reads only what was written after: nothing. (Each
    # partition holds the checkpoint marker of the start-up at least.)
    pipeline = pipeline_factory(worker={"store": "rocksdb"})
    now = time.time_ns() // 1_000_000
    messages = [
        (
            f"d{n}".encode(),
            orjson.dumps(
                {
                    "event_id": f"e{n}",
                    "app_id": "a",
                    "device_id": f"d{n}",
                    "type": "app_launch",
                    "ts": now,
                }
            ),
        )
        for n in range(30)
    ]
    pipeline.start_worker()
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), messages))
    enriched = pipeline.topic("enriched")
    asyncio.run(consume(pipeline.bootstrap, [enriched], lambda r: len(r[enriched]) >= 30, 60))
    pipeline.stop_workers(signal.SIGTERM)
    config = load_config(pipeline.config_path, env={})
    ends = asyncio.run(end_offsets(pipeline.bootstrap, changelog_topic(config)))
    persisted = stored_offsets(pipeline)
    assert set(persisted) == {p for p, end in ends.items() if end > 1}, pipeline.worker_log()
    markers = asyncio.run(last_checkpoint_markers(pipeline.bootstrap, changelog_topic(config)))
    assert persisted == markers
    devices = sum(len(rows) for rows in stored_rows(pipeline).values())
    assert devices == 30
