"""`sessionize topics | produce | consume` as a user runs them, against a real broker.

Every test has its own topics and app id (`pipeline_factory`), so tests share the broker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from pipeline.workload.generator import WorkloadSpec, generate_messages
from tests.integration.harness import REPO, Pipeline, read_jsonl

pytestmark = pytest.mark.kafka

PARTNERS = [
    {"name": "canonical", "format": "canonical"},
    {"name": "amp", "format": "amplitude"},
]


def sessionize(
    *argv: str, stdin: bytes | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Run the `sessionize` command line in a new process, as a user would."""
    # The test's config file is the whole configuration (the jar cache location aside).
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SESSIONIZE_") or name == "SESSIONIZE_CACHE"
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *argv],
        input=stdin,
        capture_output=True,
        timeout=timeout_s,
        cwd=REPO,
        env=env,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    """stdout of a run that must succeed."""
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@pytest.fixture
def pipeline(pipeline_factory: Callable[..., Pipeline]) -> Pipeline:
    """A pipeline with its topics created (2 partitions), no worker."""
    made = pipeline_factory(partitions=2, partners=PARTNERS)
    ok(sessionize("topics", "create", "--config", str(made.config_path)))
    return made


def messages_file(path: Path, spec: WorkloadSpec, extra: list[bytes]) -> list[bytes]:
    lines = [*generate_messages(spec), *extra]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return lines


def test_topics_create_list_describe(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    names = [f"{prefix}.{role}" for role in ("raw", "sessions", "enriched", "deadletter")]
    names += [f"{prefix}.partner.canonical", f"{prefix}.partner.amp"]
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        f'[kafka]\nbootstrap = "{kafka_bootstrap}"\n'
        f'[topics]\ninput = "{names[0]}"\nsessions = "{names[1]}"\n'
        f'enriched = "{names[2]}"\ndeadletter = "{names[3]}"\npartitions = 2\n'
        f'[[partners]]\nname = "canonical"\nformat = "canonical"\ntopic = "{names[4]}"\n'
        f'[[partners]]\nname = "amp"\nformat = "amplitude"\ntopic = "{names[5]}"\n'
    )
    config = ("--config", str(config_path))

    listed = ok(sessionize("topics", "list", *config))
    for name in names:
        assert _row(listed, name)[-1] == "missing"

    created = ok(sessionize("topics", "create", *config))
    for name in names:
        assert _row(created, name)[-3:] == ["created", "2", "1"]

    listed = ok(sessionize("topics", "list", *config))
    assert _row(listed, names[0])[-2:] == ["input", "exists"]
    described = ok(sessionize("topics", "describe", *config))
    assert "PARTITIONS" in described and "REPLICATION" in described
    for name in names:
        assert _row(described, name)[-3:] == ["exists", "2", "1"]
    assert "amplitude" in " ".join(_row(described, names[5]))

    again = ok(sessionize("topics", "create", *config))
    assert all(_row(again, name)[-3] == "exists" for name in names)


def _row(table: str, topic: str) -> list[str]:
    for line in table.splitlines():
        if line.split()[0] == topic:
            return line.split()
    raise AssertionError(f"{topic} not in\n{table}")


def test_produce_a_file_then_consume_it_back(pipeline: Pipeline, tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    sent = messages_file(
        source, WorkloadSpec(devices=6, events_per_device=6, seed=4), [b"not json", b"[1, 2]"]
    )
    config = ("--config", str(pipeline.config_path))
    produced = sessionize("produce", "--input", str(source), *config)
    assert produced.returncode == 0, produced.stderr
    summary = produced.stderr.decode().strip().splitlines()
    assert len(summary) == 1  # piped: no progress bar, just the summary
    assert summary[0].startswith(f"sent {len(sent)} messages")
    assert "0 failed" in summary[0] and "events/s" in summary[0]

    raw = pipeline.topic("raw")
    out = ok(sessionize("consume", "--topic", raw, "--from-beginning", *config))
    assert Counter(out.encode().splitlines()) == Counter(sent)

    first = ok(sessionize("consume", "--topic", raw, "--from-beginning", "--max", "4", *config))
    assert len(first.splitlines()) == 4

    pretty = ok(sessionize("consume", "--topic", raw, "--from-beginning", "--pretty", *config))
    documents = [orjson.loads(d) for d in _split_documents(pretty)]
    assert len(documents) == len(sent)
    for document in documents:
        assert document["topic"] == raw
        assert {"partition", "offset", "key", "value"} <= document.keys()
        value = document["value"]
        expected = value.get("device_id") if isinstance(value, dict) else None
        assert document["key"] == expected


def _split_documents(text: str) -> list[str]:
    """Pretty output: indented JSON documents, each starting with '{' at the line start."""
    documents: list[list[str]] = []
    for line in text.splitlines():
        if line == "{":
            documents.append([])
        documents[-1].append(line)
    return ["\n".join(lines) for lines in documents]


def test_produce_from_stdin(pipeline: Pipeline) -> None:
    lines = [orjson.dumps({"device_id": f"d{n}", "n": n}) for n in range(5)]
    config = ("--config", str(pipeline.config_path))
    ok(sessionize("produce", "--input", "-", *config, stdin=b"\n".join(lines) + b"\n\n"))
    out = ok(sessionize("consume", "--topic", pipeline.topic("raw"), "--from-beginning", *config))
    assert sorted(out.encode().splitlines()) == sorted(lines)


def test_produce_generated_traffic_for_2_s(pipeline: Pipeline) -> None:
    config = ("--config", str(pipeline.config_path))
    started_ms = time.time_ns() // 1_000_000
    started = time.monotonic()
    produced = sessionize(
        "produce", "--devices", "40", "--rate", "30", "--duration", "2", "--seed", "7", *config
    )
    assert produced.returncode == 0, produced.stderr
    assert time.monotonic() - started >= 2
    summary = produced.stderr.decode().strip().splitlines()[-1]
    count = int(summary.split()[1])
    assert count > 0 and " 0 failed" in summary

    out = ok(sessionize("consume", "--topic", pipeline.topic("raw"), "--from-beginning", *config))
    events = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(out.splitlines()) == count
    stamps = [e["ts"] for e in events if isinstance(e.get("ts"), int) and e["ts"] > 10**12]
    ended_ms = time.time_ns() // 1_000_000
    assert stamps and all(started_ms <= ts <= ended_ms for ts in stamps)  # event time = now


def test_consumer_group_resumes_where_it_committed(pipeline: Pipeline, tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    sent = messages_file(source, WorkloadSpec(devices=4, events_per_device=5, seed=2), [])
    config = ("--config", str(pipeline.config_path))
    ok(sessionize("produce", "--input", str(source), *config))
    raw = ("--topic", pipeline.topic("raw"), "--from-beginning", "--group", f"{pipeline.name}-g")
    first = ok(sessionize("consume", *raw, "--max", "5", *config))
    rest = ok(sessionize("consume", *raw, *config))
    assert len(first.splitlines()) == 5
    assert Counter((first + rest).encode().splitlines()) == Counter(sent)
    assert ok(sessionize("consume", *raw, *config)) == ""


def test_unknown_topic_is_exit_3(pipeline: Pipeline) -> None:
    result = sessionize(
        "consume", "--topic", "no.such.topic", "--config", str(pipeline.config_path)
    )
    assert result.returncode == 3
    assert result.stdout == b""
    (line,) = result.stderr.decode().splitlines()
    assert "topic 'no.such.topic' does not exist" in line


@pytest.mark.parametrize("command", [["worker"], ["topics", "list"], ["consume"]])
@pytest.mark.parametrize(
    ("security", "needle"),
    [
        (
            'security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
            'sasl_username = "u"\nsasl_password = "the-secret"\n',
            "does not take SASL on this listener",
        ),
        ('security_protocol = "SSL"\n', "TLS with Kafka at"),
    ],
)
def test_security_the_broker_refuses_is_one_line_and_exit_3(
    kafka_bootstrap: str, tmp_path: Path, command: list[str], security: str, needle: str
) -> None:
    # The test broker listens in PLAINTEXT: a SASL handshake or a TLS hello is refused.
    config = tmp_path / "secure.toml"
    config.write_text(f'[kafka]\nbootstrap = "{kafka_bootstrap}"\n{security}')
    result = sessionize(*command, "--config", str(config))
    assert result.returncode == 3
    (line,) = result.stderr.decode().splitlines()
    assert needle in line and kafka_bootstrap in line
    assert "the-secret" not in line


def test_unknown_partner_lists_the_configured_ones(pipeline: Pipeline) -> None:
    result = sessionize("consume", "--partner", "braze", "--config", str(pipeline.config_path))
    assert result.returncode == 2
    (line,) = result.stderr.decode().splitlines()
    assert "unknown partner 'braze'" in line and "amp, canonical" in line


def test_consume_a_partner_of_a_running_worker(
    pipeline_factory: Callable[..., Pipeline], tmp_path: Path
) -> None:
    made = pipeline_factory(
        partitions=2, partners=PARTNERS, sessions={"session_timeout_s": 2, "idle_timeout_s": 20}
    )
    config = ("--config", str(made.config_path))
    ok(sessionize("topics", "create", *config))
    made.start_worker()
    now = time.time_ns() // 1_000_000
    events = [
        {"event_id": f"e{n}", "app_id": "shop", "device_id": device, "type": kind, "ts": now + n}
        for device in ("phone-1", "phone-2")
        for n, kind in enumerate(["app_launch", "screen_view", "app_background", "app_terminate"])
    ]
    messages = [orjson.dumps(e) for e in events]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(m + b"\n" for m in messages))
    ok(sessionize("produce", "--input", str(source), *config))

    expected = read_jsonl(made.offline([(None, m) for m in messages]) / "partners" / "amp.jsonl")
    assert len(expected) == 12  # per device: session start, 4 events, session end
    out = ok(
        sessionize(
            "consume",
            "--partner",
            "amp",
            "--from-beginning",
            "--follow",
            "--max",
            "12",
            *config,
            timeout_s=90,
        )
    )
    received = [orjson.loads(line) for line in out.splitlines()]
    assert sorted(received, key=_insert_key) == sorted(expected, key=_insert_key)
    assert {r["insert_id"] for r in received} >= {"e0", "e3"}
    assert sum(r["event_type"] == "session_end" for r in received) == 2


def _insert_key(record: dict[str, object]) -> tuple[str, str]:
    return str(record["device_id"]), str(record["insert_id"])


def test_demo_on_the_test_broker(kafka_bootstrap: str, tmp_path: Path) -> None:
    output = tmp_path / "demo"
    result = sessionize(
        "demo",
        "--bootstrap",
        kafka_bootstrap,
        "--output-dir",
        str(output),
        "--duration",
        "4",
        "--devices",
        "60",
        "--rate",
        "40",
        timeout_s=240,
    )
    summary = ok(result)
    assert summary == (output / "summary.txt").read_text()
    started, ended = _numbers(summary, "sessions")[:2]
    assert started > 0 and started == ended  # every session closed before the demo read them
    assert _numbers(summary, "input")[0] > 100
    for name in ("amplitude", "braze", "canonical", "ga4", "mixpanel"):
        assert (output / "partners" / f"{name}.jsonl").stat().st_size > 0
        assert f"  {name} " in summary
    page = (output / "timeline.html").read_text()
    assert "<svg" in page and "session ended" in page
    assert "demo: worker running" in result.stderr.decode()


def _numbers(summary: str, label: str) -> list[int]:
    line = next(line for line in summary.splitlines() if line.startswith(label))
    words = line.replace(",", "").replace(":", " ").split()
    return [int(word) for word in words if word.isdigit()]
