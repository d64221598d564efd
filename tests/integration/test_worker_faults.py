"""No message can stop the worker, and a fatal error ends it (SPEC section 2), on a real broker.

Bad messages sit between good events of other devices on the same partition: the good events'
outputs must be committed, the bad ones dead-lettered, and the worker must go on. A worker
that fails for good must be gone within 10 s, not alive doing nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.config import load_config
from pipeline.input import Limits
from pipeline.kafka import local as localkafka
from pipeline.kafka.topics import max_message_bytes
from pipeline.streaming.partitioning import partition_for
from tests.integration.harness import Pipeline, consume, produce, produce_routed

pytestmark = pytest.mark.kafka

FAST = {"session_timeout_s": 3, "idle_timeout_s": 6}
MIB = 1024 * 1024
FAULTY_WORKER = ("-m", "tests.integration.faulty_worker")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def event(event_id: str, device_id: str, kind: str = "app_terminate", **fields: Any) -> bytes:
    body = {"event_id": event_id, "app_id": "a", "device_id": device_id, "type": kind}
    return orjson.dumps({**body, "ts": now_ms(), **fields})


def nested_event(event_id: str, device_id: str, levels: int) -> bytes:
    """An event whose attributes nest `levels` objects deep (orjson writes at most 254)."""
    attributes = b'{"a":' * levels + b"1" + b"}" * levels
    return event(event_id, device_id, "custom_event")[:-1] + b',"attributes":' + attributes + b"}"


def event_of_size(event_id: str, device_id: str, size: int) -> bytes:
    """A valid event of exactly `size` bytes (as orjson writes it back)."""
    padding = size - len(event(event_id, device_id, name=""))
    message = event(event_id, device_id, name="x" * padding)
    assert len(message) == size
    return message


async def produce_gzip(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    """Send one message gzip-compressed: the broker takes it, however large uncompressed."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, compression_type="gzip", max_request_size=8 * MIB
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def read_outputs(
    pipeline: Pipeline, done: Callable[[dict[str, list[dict[str, Any]]]], bool], timeout_s: float
) -> dict[str, list[dict[str, Any]]]:
    """The committed records of the output topics, by role, once `done(records)` holds."""
    roles = ("sessions", "enriched", "deadletter")
    topics = {pipeline.topic(role): role for role in roles}

    def by_role(records: dict[str, list[bytes]]) -> dict[str, list[dict[str, Any]]]:
        return {topics[t]: [orjson.loads(v) for v in values] for t, values in records.items()}

    records = asyncio.run(
        consume(pipeline.bootstrap, list(topics), lambda r: done(by_role(r)), timeout_s)
    )
    return by_role(records)


def device_events(devices: range) -> list[tuple[bytes | None, bytes]]:
    """A launch, an event and a terminate (one whole session) for each device."""
    kinds = ("app_launch", "custom_event", "app_terminate")
    return [
        (f"d{d}".encode(), event(f"e{d}-{i}", f"d{d}", kind))
        for d in devices
        for i, kind in enumerate(kinds)
    ]


def sessions_complete(sessions: int) -> Callable[[dict[str, list[dict[str, Any]]]], bool]:
    """`done` for read_outputs: the records of `sessions` whole sessions of device_events."""

    def complete(records: dict[str, list[dict[str, Any]]]) -> bool:
        ends = [r for r in records["sessions"] if r["type"] == "session_end"]
        return len(records["enriched"]) >= 3 * sessions and len(ends) >= sessions

    return complete


def assert_once_each(outputs: dict[str, list[dict[str, Any]]], sessions: int, events: int) -> None:
    """No session and no enriched event missing, none delivered twice."""
    enriched = [(r["session_id"], r["event_id"]) for r in outputs["enriched"]]
    assert len(enriched) == len(set(enriched)) == events
    for kind in ("session_start", "session_end"):
        ids = [r["session_id"] for r in outputs["sessions"] if r["type"] == kind]
        assert len(ids) == len(set(ids)) == sessions, kind


def wait_for_exit(process: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Seconds until `process` exited (pytest fails if it is still alive after `timeout_s`)."""
    started = time.monotonic()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker still runs {timeout_s:g} s after its fatal error")
    return time.monotonic() - started


def test_deep_huge_and_max_size_messages_between_good_events_on_one_partition(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions=FAST, partitions=1)
    max_event_bytes = Limits().max_event_bytes
    deep = nested_event("deep", "bad-deep", levels=300)
    huge = event("huge", "bad-huge", name="y" * (3 * MIB))
    exact = event_of_size("exact", "big", max_event_bytes)
    topic = pipeline.topic("raw")
    worker = pipeline.start_worker()
    asyncio.run(
        produce(
            pipeline.bootstrap,
            topic,
            [
                (b"good-0", event("g0", "good-0")),
                (b"bad-deep", deep),
                (b"good-1", event("g1", "good-1")),
                (b"big", exact),
                (b"good-2", event("g2", "good-2")),
            ],
        )
    )
    asyncio.run(produce_gzip(pipeline.bootstrap, topic, b"bad-huge", huge))
    asyncio.run(produce(pipeline.bootstrap, topic, [(b"good-3", event("g3", "good-3"))]))

    def complete(records: dict[str, list[dict[str, Any]]]) -> bool:
        return len(records["enriched"]) >= 5 and len(records["deadletter"]) >= 2

    outputs = read_outputs(pipeline, complete, timeout_s=120)
    assert worker.poll() is None, pipeline.worker_log()
    enriched = {record["event_id"]: record for record in outputs["enriched"]}
    assert sorted(enriched) == ["exact", "g0", "g1", "g2", "g3"], pipeline.worker_log()
    assert len(orjson.dumps(enriched["exact"])) > max_event_bytes  # written whole
    ends = [r["device_id"] for r in outputs["sessions"] if r["type"] == "session_end"]
    assert sorted(ends) == ["big", "good-0", "good-1", "good-2", "good-3"]
    dead = {record["reason"]: record for record in outputs["deadletter"]}
    assert sorted(dead) == ["invalid_event", "too_large"]
    assert dead["invalid_event"]["payload"] == deep.decode()
    too_large = dead["too_large"]
    assert too_large["payload_truncated"] is True
    assert too_large["payload_bytes"] == len(huge)
    assert too_large["payload_sha256"] == hashlib.sha256(huge).hexdigest()
    assert len(too_large["payload"]) == Limits().max_dead_letter_payload_bytes
    assert (too_large["topic"], too_large["partition"]) == (topic, 0)


def test_an_output_record_too_large_for_its_topic_is_a_dead_letter_and_the_worker_goes_on(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    # Small events (max_event_bytes 100 kB, so records up to 458,752 bytes), but a session that
    # gathers 600 kB of attributes: its session_end cannot be written.
    pipeline = pipeline_factory(sessions=FAST, input={"max_event_bytes": 100_000}, partitions=1)
    settings: list[tuple[bytes | None, bytes]] = [
        (
            b"attrs",
            event(
                f"set-{i}",
                "attrs",
                "session_attribute",
                attribute={"op": "set", "key": f"k{i}", "value": "v" * 60_000},
            ),
        )
        for i in range(10)
    ]
    messages = [*settings, (b"attrs", event("end", "attrs")), (b"after", event("a1", "after"))]
    worker = pipeline.start_worker()
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), messages))

    def complete(records: dict[str, list[dict[str, Any]]]) -> bool:
        return any(r["event_id"] == "a1" for r in records["enriched"]) and bool(
            records["deadletter"]
        )

    outputs = read_outputs(pipeline, complete, timeout_s=90)
    assert worker.poll() is None, pipeline.worker_log()
    assert len(outputs["enriched"]) == 12
    ends = [r["device_id"] for r in outputs["sessions"] if r["type"] == "session_end"]
    assert ends == ["after"]
    (dead,) = outputs["deadletter"]
    assert dead["reason"] == "too_large"
    assert dead["error"].startswith("its session_end record (session_id ")
    room = max_message_bytes(load_config(pipeline.config_path, env={})) - 512
    assert dead["payload_truncated"] is True and dead["payload_bytes"] > room
    assert dead["offset"] == len(messages) - 2  # the event that closed the session


def test_a_batch_that_outgrows_one_record_when_forwarded_is_split(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    # 90 kB of tiny events, each inheriting a 128-character app id and a 256-character device
    # id: forwarded to their device's partition they come to ~800 kB, over the 458,752 bytes
    # a record may have with max_event_bytes 100 kB.
    pipeline = pipeline_factory(sessions=FAST, input={"max_event_bytes": 100_000}, partitions=3)
    app_id, device_id = "A" * 128, "D" * 256
    ts = now_ms()
    events = [{"event_id": f"e{i}", "type": "custom_event", "ts": ts} for i in range(1600)]
    events[-1]["type"] = "app_terminate"
    batch = orjson.dumps({"app_id": app_id, "device_id": device_id, "events": events})
    assert 80_000 < len(batch) < 100_000
    elsewhere = (partition_for(device_id, 3) + 1) % 3
    worker = pipeline.start_worker()
    asyncio.run(
        produce_routed(pipeline.bootstrap, pipeline.topic("raw"), [(None, batch, elsewhere)])
    )

    def complete(records: dict[str, list[dict[str, Any]]]) -> bool:
        return len(records["enriched"]) >= len(events) or bool(records["deadletter"])

    outputs = read_outputs(pipeline, complete, timeout_s=90)
    assert worker.poll() is None, pipeline.worker_log()
    assert outputs["deadletter"] == []
    assert [r["session_seq"] for r in outputs["enriched"]] == list(range(1, len(events) + 1))
    assert [r["event_id"] for r in outputs["enriched"]] == [e["event_id"] for e in events]


def test_a_worker_refuses_in_one_line_a_topic_whose_max_message_bytes_is_too_small(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory()
    enriched = pipeline.topic("enriched")

    async def shrink() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.bootstrap)
        await admin.start()
        try:
            resource = ConfigResource(
                ConfigResourceType.TOPIC, enriched, {"max.message.bytes": "1048588"}
            )
            await admin.alter_configs([resource])
        finally:
            await admin.close()

    asyncio.run(shrink())
    worker = pipeline.start_worker()
    assert worker.wait(60) == 3
    lines = pipeline.worker_log().strip().splitlines()
    needed = max_message_bytes(load_config(pipeline.config_path, env={}))
    assert lines == [
        f"sessionize worker: error: topic '{enriched}' has max.message.bytes=1048588; the "
        f"pipeline needs max.message.bytes={needed} or more, to hold its largest record "
        f"(kafka-configs.sh --bootstrap-server {pipeline.bootstrap} --alter --entity-type "
        f"topics --entity-name {enriched} --add-config max.message.bytes={needed})"
    ]


def test_a_worker_fenced_by_a_newer_instance_exits_within_10s(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions=FAST)
    worker = pipeline.start_worker()
    topic = pipeline.topic("raw")
    asyncio.run(produce(pipeline.bootstrap, topic, [(b"d1", event("e1", "d1"))]))
    read_outputs(pipeline, lambda r: bool(r["enriched"]), timeout_s=60)

    async def fence() -> None:
        # A producer with the worker's transactional id: what a second instance would do.
        newer = AIOKafkaProducer(
            bootstrap_servers=pipeline.bootstrap, transactional_id=f"{pipeline.name}-worker-1"
        )
        await newer.start()
        await newer.stop()

    asyncio.run(fence())
    asyncio.run(produce(pipeline.bootstrap, topic, [(b"d2", event("e2", "d2"))]))
    elapsed = wait_for_exit(worker, 30)
    assert worker.returncode == 3, pipeline.worker_log()
    assert elapsed < 10, f"exited {elapsed:.1f} s after the fence"
    assert "ProducerFenced" in pipeline.worker_log()


@pytest.mark.parametrize(
    ("fault", "trigger"),
    [("bug", (b"boom", event("x", "boom"))), ("faust-crash", (b"crash", event("y", "crashing")))],
)
def test_a_worker_that_crashes_is_gone_within_10s_not_hung(
    pipeline_factory: Callable[..., Pipeline], fault: str, trigger: tuple[bytes, bytes]
) -> None:
    pipeline = pipeline_factory(sessions=FAST)
    worker = pipeline.start_worker(entry=(*FAULTY_WORKER, fault))
    topic = pipeline.topic("raw")
    asyncio.run(produce(pipeline.bootstrap, topic, [(b"d1", event("e1", "d1"))]))
    read_outputs(pipeline, lambda r: bool(r["enriched"]), timeout_s=60)  # the worker runs
    asyncio.run(produce(pipeline.bootstrap, topic, [trigger]))
    elapsed = wait_for_exit(worker, 30)
    assert worker.returncode == 1, pipeline.worker_log()
    assert elapsed < 10, f"exited {elapsed:.1f} s after the fault"
    assert "injected" in pipeline.worker_log()


def test_a_transient_failure_mid_transaction_goes_back_to_the_last_commit_exactly_once(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions=FAST)
    worker = pipeline.start_worker(entry=(*FAULTY_WORKER, "transient"))
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), device_events(range(40))))
    read_outputs(pipeline, sessions_complete(40), timeout_s=90)
    time.sleep(2)  # late duplicates, if any, would show now
    outputs = read_outputs(pipeline, sessions_complete(40), timeout_s=30)
    assert worker.poll() is None, pipeline.worker_log()
    assert_once_each(outputs, sessions=40, events=120)
    assert "RequestTimedOutError: injected timeout" in pipeline.worker_log()


class Trickle:
    """Sends an app_terminate of a new device every `every_s` from a thread, through outages."""

    def __init__(self, bootstrap: str, topic: str, every_s: float = 0.1) -> None:
        self.bootstrap, self.topic, self.every_s = bootstrap, topic, every_s
        self.sent = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    def __enter__(self) -> Trickle:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(180)

    async def _run(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=True, request_timeout_ms=180_000
        )
        await producer.start()
        deliveries = []
        try:
            while not self.stopping.is_set():
                device = f"trickle-{self.sent}"
                value = event(f"t{self.sent}", device)
                deliveries.append(await producer.send(self.topic, value, key=device.encode()))
                self.sent += 1
                await asyncio.sleep(self.every_s)
            await asyncio.gather(*deliveries)
        finally:
            await producer.stop()


def test_a_broker_outage_leaves_a_few_log_lines_and_loses_nothing(tmp_path: Path) -> None:
    # A broker of its own, stopped for 20 s while events keep coming.
    broker = localkafka.start(tmp_path / "kafka")
    name = f"t{uuid.uuid4().hex[:10]}"
    directory = tmp_path / name
    directory.mkdir()
    pipeline = Pipeline(broker.bootstrap, directory, name, {"sessions": FAST})
    try:
        pipeline.write_config()
        pipeline.create_topics()
        worker = pipeline.start_worker()
        topic = pipeline.topic("raw")
        asyncio.run(produce(pipeline.bootstrap, topic, device_events(range(30))))
        read_outputs(pipeline, lambda r: len(r["enriched"]) >= 90, timeout_s=60)
        with Trickle(pipeline.bootstrap, topic) as trickle:
            time.sleep(2)
            broker = localkafka.restart(broker, down_s=20)
            time.sleep(5)
        asyncio.run(produce(pipeline.bootstrap, topic, device_events(range(30, 60))))
        sessions = 60 + trickle.sent
        events = 180 + trickle.sent  # a trickle session is one app_terminate

        def complete(records: dict[str, list[dict[str, Any]]]) -> bool:
            ends = [r for r in records["sessions"] if r["type"] == "session_end"]
            return len(records["enriched"]) >= events and len(ends) >= sessions

        read_outputs(pipeline, complete, timeout_s=120)
        time.sleep(2)  # late duplicates, if any, would show now
        outputs = read_outputs(pipeline, complete, timeout_s=30)
        log = (directory / "worker-0.log").read_text()
        assert worker.poll() is None, log
        assert_once_each(outputs, sessions, events)
        lines = log.splitlines()
        assert len(lines) <= 40, log
        assert any("Kafka unreachable" in line for line in lines), log
        assert any("Kafka reachable again after" in line for line in lines), log
    finally:
        pipeline.stop_workers(signal.SIGKILL)
        broker.stop()
