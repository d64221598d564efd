"""The local broker (pipeline/kafka/local, via tests/conftest.py) and its command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.kafka.topics import describe_when_known

pytestmark = pytest.mark.kafka


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _localkafka(
    *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.kafka.local", *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


async def test_produced_record_is_consumed_and_committed(kafka_bootstrap: str) -> None:
    topic, group = _unique("roundtrip"), _unique("group")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"payload", key=b"device-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(topic, sent.partition))
    finally:
        await consumer.stop()

    assert (record.key, record.value, record.offset) == (b"device-1", b"payload", sent.offset)
    assert committed == sent.offset + 1


async def test_created_topic_shows_three_partitions_in_metadata(kafka_bootstrap: str) -> None:
    topic = _unique("three")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        # KRaft commits the topic before every broker's metadata has it (error 3 once in CI).
        description = await describe_when_known(admin, topic)
    finally:
        await admin.close()

    assert description["error_code"] == 0
    assert sorted(partition["partition"] for partition in description["partitions"]) == [0, 1, 2]


def test_cli_up_is_idempotent_and_down_stops_the_broker(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "kafka")
    first = _localkafka("up", "--data-dir", data_dir)
    try:
        assert first.returncode == 0, first.stderr
        again = _localkafka("up", "--data-dir", data_dir)
        address = _localkafka("address", "--data-dir", data_dir)
        assert again.stdout == address.stdout == first.stdout
        assert first.stdout.startswith("127.0.0.1:")
    finally:
        down = _localkafka("down", "--data-dir", data_dir)
    assert down.returncode == 0, down.stderr

    gone = _localkafka("address", "--data-dir", data_dir)
    assert gone.returncode == 2
    assert gone.stderr.count("\n") == 1 and "Traceback" not in gone.stderr


def test_cli_without_java_fails_in_one_line(tmp_path: Path) -> None:
    result = _localkafka(
        "up", "--data-dir", str(tmp_path), env={**os.environ, "PATH": str(tmp_path)}
    )
    assert result.returncode == 2
    assert result.stderr.startswith("localkafka: `java` not found")
    assert result.stderr.count("\n") == 1
