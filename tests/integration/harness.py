"""Helpers for tests against the real broker: a worker subprocess and topic I/O.

Each test gets its own topic names and Faust app id, so tests share one broker safely.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.config import load_config
from pipeline.kafka.topics import ensure_topics
from pipeline.offline import run_offline

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("sessions", "enriched", "deadletter")


@dataclass
class Pipeline:
    """One isolated pipeline on the test broker: its config, topics and worker processes."""

    bootstrap: str
    directory: Path
    name: str
    settings: dict[str, Any]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.directory / "config.toml"

    def topic(self, role: str) -> str:
        return f"{self.name}.{role}"

    def write_config(self) -> None:
        sessions = self.settings.get("sessions", {})
        lines = ["[sessions]"]
        lines += [f"{k} = {v!r}" for k, v in sessions.items()]
        lines += ["[input]"] + [f"{k} = {v!r}" for k, v in self.settings.get("input", {}).items()]
        lines += [
            "[kafka]",
            f'bootstrap = "{self.bootstrap}"',
            "[topics]",
            f'input = "{self.topic("raw")}"',
            f'sessions = "{self.topic("sessions")}"',
            f'enriched = "{self.topic("enriched")}"',
            f'deadletter = "{self.topic("deadletter")}"',
            f"partitions = {self.settings.get('partitions', 3)}",
            "[worker]",
            f'app_id = "{self.name}"',
            f"grace_s = {self.settings.get('grace_s', 1.0)}",
            "tick_s = 0.25",
            f"web_port = {self.settings.get('web_port', 0)}",  # 0: a free port each
            f'data_dir = "{self.directory / "data"}"',
        ]
        lines += [f"{k} = {v!r}" for k, v in self.settings.get("worker", {}).items()]
        for partner in self.settings.get(
            "partners", [{"name": "canonical", "format": "canonical"}]
        ):
            lines.append("[[partners]]")
            lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in partner.items()]
            if "topic" not in partner:
                lines.append(f'topic = "{self.topic("partner." + partner["name"])}"')
        self.config_path.write_text("\n".join(lines) + "\n")

    def create_topics(self) -> None:
        """Create the pipeline's topics with the configured partitions (not 1 by auto-create)."""
        asyncio.run(ensure_topics(load_config(self.config_path, env={})))

    def start_worker(
        self, instance_id: str | None = None, entry: Sequence[str] = ("-m", "pipeline")
    ) -> subprocess.Popen[bytes]:
        """A worker process; workers running side by side need their own `instance_id`.
        `entry`: what python runs instead of the command line (it gets `worker --config ...`)."""
        log = (self.directory / f"worker-{len(self.workers)}.log").open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if instance_id is not None:
            env["SESSIONIZE_WORKER_INSTANCE_ID"] = instance_id
        process = subprocess.Popen(
            [
                sys.executable,
                *entry,
                "worker",
                "--config",
                str(self.config_path),
                "--loglevel",
                os.environ.get("SESSIONIZE_TEST_LOGLEVEL", "warning"),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.workers.append(process)
        return process

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(sig)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)

    def worker_log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in self.directory.glob("*.log")
        )

    def offline(
        self, messages: list[tuple[bytes | None, bytes]], now_ms: int | None = None
    ) -> Path:
        """Run offline mode over the same messages with the same config; returns its output dir."""
        source = self.directory / "input.jsonl"
        source.write_bytes(b"".join(value + b"\n" for _, value in messages))
        output = self.directory / "offline"
        output.mkdir(exist_ok=True)
        config = load_config(self.config_path, env={})
        with source.open("rb") as handle:
            run_offline(handle, output, config, now_ms or time.time_ns() // 1_000_000)
        return output


async def produce(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes]],
    timestamp_ms: int | None = None,
) -> None:
    """Send messages in order and wait until the broker has them all."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4_000_000
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, timestamp_ms=timestamp_ms)
            for key, value in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_routed(
    bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes, int | None]]
) -> None:
    """Send (key, value, partition) in order; partition None lets the partitioner choose."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, partition=partition)
            for key, value, partition in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topics: list[str],
    until: Callable[[dict[str, list[bytes]]], bool],
    timeout_s: float,
) -> dict[str, list[bytes]]:
    """Read topics from the beginning (read_committed) until `until(records)` or the timeout."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        group_id=None,
        metadata_max_age_ms=1000,
    )
    records: dict[str, list[bytes]] = {topic: [] for topic in topics}
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(records):
            batch = await consumer.getmany(timeout_ms=300)
            for tp, messages in batch.items():
                records[tp.topic].extend(m.value for m in messages if m.value is not None)
    finally:
        await consumer.stop()
    return records


def all_sessions_closed(pipeline: Pipeline) -> Callable[[dict[str, list[bytes]]], bool]:
    """`until` for consume: every session_start has its session_end."""

    def check(records: dict[str, list[bytes]]) -> bool:
        sessions = [orjson.loads(v) for v in records[pipeline.topic("sessions")]]
        starts = {r["session_id"] for r in sessions if r["type"] == "session_start"}
        ends = {r["session_id"] for r in sessions if r["type"] == "session_end"}
        return bool(starts) and starts == ends

    return check


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def per_device(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Records grouped by device key, in their order."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault((record["app_id"], record["device_id"]), []).append(record)
    return grouped


def dead_letter_shape(record: dict[str, Any]) -> tuple[Any, ...]:
    """A dead letter without where it came from (line vs topic/offset differ by mode)."""
    return (record["reason"], record["index"], record["payload"], record["payload_encoding"])
