"""Seeing a worker on a real broker: its metrics, readiness, lookups and log lines (issue 13)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.kafka import local as localkafka
from pipeline.streaming.partitioning import partition_for
from tests.integration.harness import REPO, Pipeline, consume, produce

pytestmark = pytest.mark.kafka

FAST = {"session_timeout_s": 3, "idle_timeout_s": 6}
WEB = re.compile(r"; web (http://\S+)")


@pytest.fixture(autouse=True)
def _info_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker's default level: its start-up line names its web address.
    monkeypatch.setenv("SESSIONIZE_TEST_LOGLEVEL", "info")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def message(event_id: str, device: str, kind: str, ts: int | None = None) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "app_id": "a", "device_id": device, "type": kind}
    return device.encode(), orjson.dumps({**body, "ts": ts or now_ms()})


def web_url(pipeline: Pipeline, index: int = 0, timeout_s: float = 60) -> str:
    """The worker's web address, from its start-up line."""
    log = pipeline.directory / f"worker-{index}.log"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = WEB.search(log.read_text(errors="replace")) if log.exists() else None
        if found:
            return found[1]
        time.sleep(0.1)
    raise AssertionError(pipeline.worker_log())


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    status, body = get(url)
    return status, orjson.loads(body)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(url + "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def metric(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(check: Callable[[], bool], timeout_s: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(why())
        time.sleep(0.2)


def read_topics(pipeline: Pipeline, roles: list[str], until: int) -> dict[str, list[Any]]:
    topics = [pipeline.topic(role) for role in roles]
    records = asyncio.run(
        consume(pipeline.bootstrap, topics, lambda r: sum(map(len, r.values())) >= until, 30)
    )
    return {role: [orjson.loads(v) for v in records[pipeline.topic(role)]] for role in roles}


def test_metrics_count_what_the_output_topics_hold(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions=FAST)
    devices = [f"dev{n}" for n in range(30)]
    messages = []
    for device in devices:
        messages += [
            message(f"{device}-1", device, "app_launch"),
            message(f"{device}-2", device, "screen_view"),
            message(f"{device}-2", device, "screen_view"),  # a duplicate
            message(f"{device}-3", device, "app_terminate"),
        ]
    messages += [(b"x", b"{broken"), (b"x", b"[1]"), (b"y", b'{"event_id": "n"}')]
    pipeline.start_worker()
    url = web_url(pipeline)
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), messages))
    wait_for(
        lambda: metric(scrape(url), "sessionize_events_applied_total") >= 90,
        60,
        pipeline.worker_log,
    )
    outputs = read_topics(pipeline, ["sessions", "enriched", "deadletter"], 60 + 90 + 3)
    samples = scrape(url)
    for role in ("sessions", "enriched", "deadletter"):
        written = metric(samples, "sessionize_records_written_total", topic=pipeline.topic(role))
        assert written == len(outputs[role]), role
    assert metric(samples, "sessionize_events_applied_total") == len(outputs["enriched"]) == 90
    assert metric(samples, "sessionize_duplicates_total") == 30
    starts = [r for r in outputs["sessions"] if r["type"] == "session_start"]
    assert metric(samples, "sessionize_sessions_started_total") == len(starts) == 30
    assert metric(samples, "sessionize_sessions_ended_total", reason="terminate") == 30
    reasons: dict[str, int] = {}
    for dead in outputs["deadletter"]:
        reasons[dead["reason"]] = reasons.get(dead["reason"], 0) + 1
    for reason, count in reasons.items():
        assert metric(samples, "sessionize_dead_letters_total", reason=reason) == count
    assert sum(reasons.values()) == 3
    assert metric(samples, "sessionize_input_messages_total", topic=pipeline.topic("raw")) == len(
        messages
    )
    assert metric(samples, "sessionize_devices") == 30
    assert metric(samples, "sessionize_open_sessions") == 0
    assert metric(samples, "sessionize_partitions_assigned") == 3
    assert metric(samples, "sessionize_commit_duration_seconds_count") >= 1
    lag = [v for (name, _), v in samples.items() if name == "sessionize_input_lag_records"]
    assert lag and all(v == 0 for v in lag)
    # The default RocksDB store, in its default budget; the cache holds the memtables' charge.
    rocksdb = {
        dict(labels)["part"]: v
        for (name, labels), v in samples.items()
        if name == "sessionize_rocksdb_memory_bytes"
    }
    assert rocksdb["budget"] == 256 * 2**20
    assert 0 < rocksdb["memtables"] <= rocksdb["block_cache"] <= rocksdb["budget"]


def test_ready_is_503_until_the_table_is_recovered_and_200_after(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions={"session_timeout_s": 600, "idle_timeout_s": 1800})
    devices = 3000
    pipeline.start_worker()
    url = web_url(pipeline)
    launches = [message(f"e{n}", f"dev{n}", "app_launch") for n in range(devices)]
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), launches))
    wait_for(
        lambda: metric(scrape(url), "sessionize_events_applied_total") >= devices,
        90,
        pipeline.worker_log,
    )
    pipeline.stop_workers(signal.SIGTERM)
    pipeline.start_worker()  # recovers 3000 devices from the changelog
    url = web_url(pipeline, 1)
    answers: list[tuple[int, dict[str, Any]]] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            status, body = get_json(url + "/ready")
        except (urllib.error.URLError, ConnectionError):
            continue  # (the socket is bound before the server answers)
        answers.append((status, body))
        if status == 200:
            break
        time.sleep(0.02)
    assert answers and answers[-1][0] == 200, (answers[-3:], pipeline.worker_log())
    waiting = [body["waiting_for"] for status, body in answers if status == 503]
    assert waiting, "never seen not ready"
    assert all(status == 503 for status, _ in answers[:-1])
    # Ready means recovered: every device is back, its session open.
    samples = scrape(url)
    assert metric(samples, "sessionize_devices") == devices
    assert metric(samples, "sessionize_open_sessions") == devices
    assert answers[-1][1]["partitions"] == [0, 1, 2]
    assert get_json(url + "/healthz") == (200, {"alive": True, "instance_id": "worker-1"})


def test_a_lookup_through_a_worker_that_does_not_own_the_device_is_forwarded(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions={"session_timeout_s": 600, "idle_timeout_s": 1800})
    pipeline.start_worker("w1")
    pipeline.start_worker("w2")
    urls = [web_url(pipeline, 0), web_url(pipeline, 1)]

    def both_ready() -> bool:
        parts = [get_json(u + "/ready")[1].get("partitions", []) for u in urls]
        return all(parts) and sorted(parts[0] + parts[1]) == [0, 1, 2]

    wait_for(both_ready, 90, pipeline.worker_log)
    owned = {i: get_json(u + "/ready")[1]["partitions"] for i, u in enumerate(urls)}
    device = next(f"dev{n}" for n in range(100) if partition_for(f"dev{n}", 3) in owned[1])
    asyncio.run(
        produce(
            pipeline.bootstrap,
            pipeline.topic("raw"),
            [message("e1", device, "app_launch"), message("e2", device, "app_background")],
        )
    )
    path = f"/sessions/a/{device}"

    def applied() -> bool:
        status, body = get_json(urls[1] + path)
        return status == 200 and body["open_session"]["event_count"] == 2

    wait_for(applied, 60, pipeline.worker_log)
    direct = get_json(urls[1] + path)
    forwarded = get_json(urls[0] + path)  # worker 0 does not own the device's partition
    assert forwarded == direct
    status, answer = forwarded
    assert (status, answer["answered_by"], answer["url"]) == (200, "w2", urls[1])
    assert answer["open_session"]["state"] == "background"
    sessions = read_topics(pipeline, ["sessions"], 1)["sessions"]
    assert answer["open_session"]["session_id"] == sessions[0]["session_id"]
    # The command line, asking the worker that does not own the device.
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "lookup",
            "--url",
            urls[0],
            "--app",
            "a",
            "--device",
            device,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"open session {sessions[0]['session_id']} (number 1)" in shown.stdout
    assert "answered by w2" in shown.stdout


def test_the_lookup_of_a_device_whose_session_just_closed_shows_that_session(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions=FAST)
    pipeline.start_worker()
    url = web_url(pipeline)
    start = now_ms()
    asyncio.run(
        produce(
            pipeline.bootstrap,
            pipeline.topic("raw"),
            [
                message("e1", "d-closed", "app_launch", start),
                message("e2", "d-closed", "screen_view", start + 1000),
                message("e3", "d-closed", "app_terminate", start + 2000),
            ],
        )
    )
    sessions = read_topics(pipeline, ["sessions"], 2)["sessions"]
    end = next(r for r in sessions if r["type"] == "session_end")
    status, answer = get_json(url + "/sessions/a/d-closed")
    assert status == 200, answer
    assert answer["open_session"] is None
    closed = answer["last_closed_session"]
    assert closed["session_id"] == end["session_id"]
    assert (closed["start_ts"], closed["end_ts"]) == (end["start_ts"], end["end_ts"])
    assert closed["duration_ms"] == end["duration_ms"] == 2000
    assert get_json(url + "/sessions/a/nobody")[0] == 404


def test_the_log_has_a_start_up_line_a_ready_line_and_progress_lines(
    pipeline_factory: Callable[..., Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONIZE_WORKER_PROGRESS_INTERVAL_S", "1")
    pipeline = pipeline_factory(sessions=FAST)
    pipeline.start_worker()
    url = web_url(pipeline)
    asyncio.run(
        produce(pipeline.bootstrap, pipeline.topic("raw"), [message("e1", "d1", "app_launch")])
    )
    log = pipeline.directory / "worker-0.log"

    def progressed() -> bool:
        return "progress: " in log.read_text() and "1 sessions open" in log.read_text()

    wait_for(progressed, 60, pipeline.worker_log)
    lines = log.read_text().splitlines()
    starts = [line for line in lines if " starting: Kafka " in line]
    assert len(starts) == 1
    assert f"worker worker-1 (group {pipeline.name})" in starts[0]
    assert pipeline.bootstrap in starts[0] and pipeline.topic("raw") in starts[0]
    assert f"kept in {pipeline.name}-devices-changelog" in starts[0]
    assert starts[0].endswith(f"web {url}")
    assert re.search(r"sessionize \d+\.\d+\.\d+", starts[0])
    assert [line for line in lines if "ready: input partitions [0, 1, 2]" in line]
    progress = [line for line in lines if "progress: " in line]
    assert re.search(r"progress: \d+ events/s over \d+ s, \d+ sessions open", progress[-1])
    # Faust's, mode's and aiokafka's own info lines are for debug only (their warnings, such
    # as mode's "Timer ... is overlapping" on a loaded machine, do show).
    internals = re.compile(r" INFO (faust|mode|aiokafka)| INFO .*\[\^")
    assert not [line for line in lines if internals.search(line)], lines


def test_log_format_json_writes_one_object_a_line(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions=FAST)
    log = pipeline.directory / "worker-0.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "worker",
                "--config",
                str(pipeline.config_path),
                "--log-format",
                "json",
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pipeline.workers.append(process)
    wait_for(lambda: '"event":"ready"' in log.read_text(), 60, pipeline.worker_log)
    entries = [orjson.loads(line) for line in log.read_text().splitlines()]
    start = next(e for e in entries if e.get("event") == "start")
    assert start["bootstrap"] == pipeline.bootstrap and start["web"].startswith("http://")
    assert {"time", "level", "logger", "message"} <= set(start)


def test_a_broker_outage_at_info_level_leaves_a_few_log_lines(tmp_path: Path) -> None:
    broker = localkafka.start(tmp_path / "kafka")
    name = f"t{uuid.uuid4().hex[:10]}"
    directory = tmp_path / name
    directory.mkdir()
    pipeline = Pipeline(broker.bootstrap, directory, name, {"sessions": FAST})
    try:
        pipeline.write_config()
        pipeline.create_topics()
        pipeline.start_worker()
        url = web_url(pipeline)
        wait_for(lambda: get(url + "/ready")[0] == 200, 60, pipeline.worker_log)
        before = len((directory / "worker-0.log").read_text().splitlines())
        broker = localkafka.restart(broker, down_s=20)
        wait_for(lambda: get(url + "/ready")[0] == 200, 120, pipeline.worker_log)
        time.sleep(5)
        lines = (directory / "worker-0.log").read_text().splitlines()[before:]
        assert pipeline.workers[0].poll() is None
        assert any("Kafka unreachable" in line for line in lines), lines
        assert any("Kafka reachable again after" in line for line in lines), lines
        assert len(lines) <= 25, "\n".join(lines)
        print(f"{len(lines)} log lines for a 20 s outage:\n" + "\n".join(lines))
    finally:
        pipeline.stop_workers(signal.SIGKILL)
        broker.stop()
