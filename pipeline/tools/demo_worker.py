"""The demo's worker: one `sessionize worker` subprocess, and the waits on it (until it has
joined its consumer group; until it has read all input and closed every session)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import orjson

from pipeline.config import Config, load_config
from pipeline.kafka.reader import read_topics
from pipeline.vocabulary import SESSION_START

WORKER_START_TIMEOUT_S: Final = 90.0
WORKER_STOP_TIMEOUT_S: Final = 10.0


class WorkerFailed(Exception):
    """The demo's worker exited, or did not join in time; one line naming its log."""


@contextlib.contextmanager
def worker_process(
    config_path: Path, log_path: Path, say: Callable[[str], None]
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker on `config_path`, its output in `log_path`; stopped on the way out (said so).

    The SESSIONIZE_* settings of the environment do not reach it (SESSIONIZE_CACHE aside), and
    its data dir is wiped first: the demo's broker is fresh, there is no state to resume.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONIZE_")}
    if "SESSIONIZE_CACHE" in os.environ:
        env["SESSIONIZE_CACHE"] = os.environ["SESSIONIZE_CACHE"]
    env["PYTHONUNBUFFERED"] = "1"
    data_dir = load_config(config_path, env={}).worker.data_dir
    shutil.rmtree(data_dir, ignore_errors=True)
    command = [sys.executable, "-m", "pipeline", "worker", "--config", str(config_path)]
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [*command, "--loglevel", "info"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us; we stop the worker in order
        )
    try:
        yield worker
    finally:
        if (stopped := stop_worker(worker)) is not None:
            say(stopped)


def stop_worker(worker: subprocess.Popen[bytes]) -> str | None:
    """SIGTERM the worker, SIGKILL it if it is still running after WORKER_STOP_TIMEOUT_S; what
    happened, for a person (None: it had already exited)."""
    if worker.poll() is not None:
        return None
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(WORKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)
        return f"worker still running {WORKER_STOP_TIMEOUT_S:.0f} s after SIGTERM: killed"
    return f"worker stopped (exit {worker.returncode})"


def check_alive(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    """WorkerFailed if the worker has exited."""
    if worker.poll() is not None:
        raise WorkerFailed(f"the worker exited with code {worker.returncode}; see {log_path}")


async def wait_until_worker_joins(
    config: Config, worker: subprocess.Popen[bytes], log_path: Path
) -> None:
    """Until the worker's consumer group is Stable: traffic sent before would pile up."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**config.kafka.client_options())
    await admin.start()
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    try:
        while True:
            check_alive(worker, log_path)
            if time.monotonic() > deadline:
                raise WorkerFailed(
                    f"the worker did not join within {WORKER_START_TIMEOUT_S:.0f} s; see {log_path}"
                )
            if await _group_state(admin, config.worker.app_id) == "Stable":
                return
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def _group_state(admin: Any, group: str) -> str | None:
    from aiokafka.errors import KafkaError

    try:
        responses = await admin.describe_consumer_groups([group])
    except KafkaError:  # e.g. no group coordinator yet on a fresh broker
        return None
    for response in responses:
        for described in response.to_object()["groups"]:
            if described["group"] == group and described["members"]:
                return str(described["state"])
    return None


async def wait_until_sessions_close(
    config: Config,
    timeout_s: float,
    limit_s: float,
    worker: subprocess.Popen[bytes],
    log_path: Path,
) -> int:
    """Until the worker has read all input and every session has ended, or `limit_s` has
    passed; returns how many sessions are still open (0 when all closed in time)."""
    started: set[str] = set()
    ended: set[str] = set()
    caught_up = asyncio.Event()

    def on_record(record: Any) -> None:
        session = orjson.loads(record.value)
        (started if session["type"] == SESSION_START else ended).add(session["session_id"])

    def done() -> bool:
        check_alive(worker, log_path)
        return caught_up.is_set() and started <= ended

    watcher = asyncio.create_task(_watch_input(config, caught_up))
    try:
        await asyncio.wait_for(
            read_topics(
                config,
                [config.topics.sessions],
                on_record,
                follow=True,
                timeout_s=timeout_s,
                until=done,
            ),
            limit_s,
        )
    except TimeoutError:
        return len(started - ended)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return 0


async def _watch_input(config: Config, caught_up: asyncio.Event) -> None:
    """Set `caught_up` once the worker's group has committed the input's end offsets."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError
    from aiokafka.structs import TopicPartition

    from pipeline.kafka.topics import input_partitions

    partitions = [
        TopicPartition(config.topics.input, p) for p in range(await input_partitions(config))
    ]
    consumer = AIOKafkaConsumer(**config.kafka.client_options())
    admin = AIOKafkaAdminClient(**config.kafka.client_options())
    await consumer.start()
    await admin.start()
    try:
        ends = await consumer.end_offsets(partitions)
        while not caught_up.is_set():
            with contextlib.suppress(KafkaError):  # asked again in half a second
                offsets = await admin.list_consumer_group_offsets(config.worker.app_id)
                if all(
                    end == 0 or (p in offsets and offsets[p].offset >= end)
                    for p, end in ends.items()
                ):
                    caught_up.set()
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()
