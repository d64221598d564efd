"""A worker on a new disk recovers the table from the changelog its predecessor wrote (applied
a whole fetch at a time, `pipeline.streaming.fetches`): every device as it was, the evicted
ones (tombstones) gone, and it then goes on with the devices' sessions as if never stopped."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config import load_config
from pipeline.kafka.topics import changelog_topic
from pipeline.streaming.codec import CHECKPOINT_KEY, table_key
from tests.integration.harness import Pipeline, consume, produce
from tests.integration.test_observe import get_json, metric, scrape, wait_for, web_url
from tests.integration.test_state import end_offsets, stored_rows

pytestmark = pytest.mark.kafka

TTL_S = 4.0
LONG = {"session_timeout_s": 600, "idle_timeout_s": 1200}  # nothing closes by itself here
KEPT = [f"kept-{n}" for n in range(240)]
GONE = [f"gone-{n}" for n in range(12)]


@pytest.fixture(autouse=True)
def _info_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker's default level: its start-up line names its web address.
    monkeypatch.setenv("SESSIONIZE_TEST_LOGLEVEL", "info")


def message(event_id: str, device: str, kind: str, ts: int) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "app_id": "a", "device_id": device, "type": kind, "ts": ts}
    return device.encode(), orjson.dumps(body)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def changelog_table(
    pipeline: Pipeline,
    until: Callable[[dict[bytes, bytes], set[bytes]], bool] | None = None,
    timeout_s: float = 60,
) -> tuple[dict[bytes, bytes], set[bytes]]:
    """The table the changelog says (read_committed, from the start, markers left out) and the
    keys tombstoned in it, read until `until(table, tombstoned)` (None: to the end, no
    transaction open) or the time is up."""
    topic = changelog_topic(load_config(pipeline.config_path, env={}))
    ends = await end_offsets(pipeline.bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=pipeline.bootstrap, isolation_level="read_committed", group_id=None
    )
    table: dict[bytes, bytes] = {}
    tombstoned: set[bytes] = set()
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in ends])
        for partition in ends:
            consumer.seek(TopicPartition(topic, partition), 0)

        async def done() -> bool:
            if until is not None:
                return until(table, tombstoned)
            for partition, end in ends.items():
                if await consumer.position(TopicPartition(topic, partition)) < end:
                    return False
            return True

        deadline = time.monotonic() + timeout_s
        while not await done() and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    if record.key == CHECKPOINT_KEY:
                        continue
                    assert record.key is not None
                    if record.value is None:
                        table.pop(record.key, None)
                        tombstoned.add(record.key)
                    else:
                        table[record.key] = record.value
    finally:
        await consumer.stop()
    return table, tombstoned


def stored_table(pipeline: Pipeline) -> dict[bytes, bytes]:
    """Every device row of the (stopped) worker's RocksDB store."""
    return {k: v for rows in stored_rows(pipeline).values() for k, v in rows}


def wait_ready(pipeline: Pipeline, index: int) -> str:
    url = web_url(pipeline, index)
    wait_for(lambda: get_json(url + "/ready")[0] == 200, 120, pipeline.worker_log)
    return url


def new_disk(pipeline: Pipeline) -> None:
    shutil.rmtree(pipeline.directory / "data", ignore_errors=True)


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_a_worker_on_a_new_disk_recovers_the_table_and_goes_on_with_its_sessions(
    pipeline_factory: Callable[..., Pipeline], store: str
) -> None:
    pipeline = pipeline_factory(
        sessions=LONG, worker={"store": store, "device_ttl_days": TTL_S / 86_400}
    )
    keys = {table_key("a", d) for d in KEPT}
    gone_keys = {table_key("a", d) for d in GONE}
    start = now_ms()
    pipeline.start_worker()
    wait_ready(pipeline, 0)  # (it creates the changelog)
    # Devices whose session ended: evicted once quiet for the TTL, a tombstone each.
    ended = [message(f"{d}-1", d, "app_launch", start) for d in GONE]
    ended += [message(f"{d}-2", d, "app_terminate", start + 10) for d in GONE]
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), ended))
    _, tombstoned = asyncio.run(
        changelog_table(pipeline, lambda _, deleted: gone_keys <= deleted, timeout_s=90)
    )
    assert gone_keys <= tombstoned, pipeline.worker_log()
    # Devices with a session open: they stay.
    opened = [message(f"{d}-1", d, "app_launch", start + 100) for d in KEPT]
    opened += [message(f"{d}-2", d, "screen_view", start + 200) for d in KEPT]
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), opened))
    sessions_topic = pipeline.topic("sessions")
    expected_starts = len(GONE) + len(KEPT)
    first = asyncio.run(
        consume(
            pipeline.bootstrap,
            [sessions_topic],
            lambda r: len(r[sessions_topic]) >= expected_starts + len(GONE),
            60,
        )
    )
    opened_ids = {
        s["device_id"]: s["session_id"]
        for s in map(orjson.loads, first[sessions_topic])
        if s["type"] == "session_start"
    }
    pipeline.stop_workers(signal.SIGTERM)
    before = stored_table(pipeline) if store == "rocksdb" else None
    changelog, _ = asyncio.run(changelog_table(pipeline))
    assert changelog.keys() == keys  # what a recovery must end with

    new_disk(pipeline)
    pipeline.start_worker()
    url = wait_ready(pipeline, 1)
    assert metric(scrape(url), "sessionize_devices") == len(KEPT)
    for device in KEPT:
        status, answer = get_json(f"{url}/sessions/a/{device}")
        assert status == 200, answer
        assert answer["open_session"]["session_id"] == opened_ids[device]
        assert answer["open_session"]["event_count"] == 2
    for device in GONE:
        assert get_json(f"{url}/sessions/a/{device}")[0] == 404
    if store == "rocksdb":  # the very same rows, and the next worker on a new disk again
        pipeline.stop_workers(signal.SIGTERM)
        assert stored_table(pipeline) == before == changelog
        new_disk(pipeline)
        pipeline.start_worker()
        wait_ready(pipeline, 2)

    # New input: the open sessions go on and end; an evicted device starts again at 1.
    later = start + 1000
    more = [message(f"{d}-3", d, "app_terminate", later) for d in KEPT]
    more.append(message("back-1", GONE[0], "app_launch", later))
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), more))
    records = asyncio.run(
        consume(
            pipeline.bootstrap,
            [sessions_topic],
            lambda r: len(r[sessions_topic]) >= expected_starts + len(GONE) + len(KEPT) + 1,
            90,
        )
    )
    sessions = [orjson.loads(v) for v in records[sessions_topic]]
    ends = {s["device_id"]: s for s in sessions if s["type"] == "session_end"}
    for device in KEPT:
        end = ends[device]
        assert (end["session_id"], end["event_count"], end["end_reason"]) == (
            opened_ids[device],
            3,
            "terminate",
        )
    starts = [s for s in sessions if s["type"] == "session_start"]
    assert len(starts) == len({s["session_id"] for s in starts}) == expected_starts + 1
    first_time, back = [s for s in starts if s["device_id"] == GONE[0]]  # (in offset order)
    assert (first_time["session_number"], back["session_number"]) == (1, 1)
    if store == "rocksdb":
        pipeline.stop_workers(signal.SIGTERM)
        table, _ = asyncio.run(changelog_table(pipeline))
        assert stored_table(pipeline) == table
