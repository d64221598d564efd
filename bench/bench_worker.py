"""Streaming-worker throughput benchmark (not a test).

One run against one local broker (started in a temp dir by `pipeline.kafka.local.start`, unless
`KAFKA_BOOTSTRAP` names one; stopped at the end):

1. generates the seeded workload (`WorkloadSpec(devices=100_000, events_per_device=10,
   batch_size=20, seed=1)` by default) and produces it to a fresh 4-partition input topic keyed
   by device id; generation and production are timed apart;
2. baseline, in a subprocess: a plain aiokafka loop reads that topic from the beginning, parses
   each message with orjson, adds one field to each event and produces one record per event;
   events/s from the first message consumed to the last output flushed: the Python I/O limit for
   the enriched stream alone;
3. `python -m pipeline worker` with no partners (sessions, enriched and dead letters only);
4. the worker with all five default partners, each on its own topic.

For 3 and 4, a read_committed consumer in this process counts the enriched and sessions topics;
events/s runs from the first committed output it sees to the moment the enriched topic holds
one record per applied event and the sessions topic every session_start (the expected counts
come from offline mode over the same messages). Outputs of a message are committed in the same
transaction as its enriched records, so partner topics are complete at that moment too.

The run then goes on until the sessions topic also holds every session_end the worker will
write without new input (`session_ends_expected`): every session ends, but one still in the
foreground when the input ends closes only after `idle_timeout_s` (30 min) without events, which
no run waits for; a backgrounded one closes `session_timeout_s` + `grace_s` after its last
message arrived. Only then is the worker stopped and its topics counted, so the counts are the
same from run to run (stopping at the last session_start left a varying number of timeouts
unwritten). The wait is reported on its own ("ends after"); it is not in events/s.

    .venv/bin/python bench/bench_worker.py                  # the full benchmark (~5 min)
    .venv/bin/python bench/bench_worker.py --profile --profile-out /tmp/prof
        # ... then each worker scenario again under cProfile, its time grouped by layer
    .venv/bin/python bench/bench_worker.py --devices 2000   # a quick smoke run

Wall-clock numbers move with whatever else runs on the machine; the CPU columns (the measured
process's user + system time over the same window) move less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.config import Config, load_config
from pipeline.kafka import local as localkafka
from pipeline.kafka.topics import ensure_topics, max_message_bytes
from pipeline.offline import run_offline
from pipeline.partners import FORMATS
from pipeline.workload.generator import WorkloadSpec, generate_keyed_messages

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = 4
SESSION_START = b'"type":"session_start"'
SESSION_END = b'"type":"session_end"'
# After the last session_start, how long the timeouts may take: they count from each message's
# arrival, and a few generated devices send a session_timeout_s of their own, longer than the
# default 60 s; a --devices 2000 run saw its last session_end 113 s after its last
# session_start.
ENDS_WAIT_S = 300.0
STALL_S = 120.0  # no new committed output for this long: give up on a worker run
STOP_TIMEOUT_S = 120.0  # a stopping worker writes its profile; that can take a while
TOP = 20

Messages = list[tuple[bytes | None, bytes]]


@dataclass(frozen=True)
class Expected:
    """What a complete run writes for the input, by offline mode over the same messages."""

    messages: int
    events: int  # applied + duplicates + dead-lettered events
    enriched: int
    session_starts: int
    session_ends: int  # what a worker writes with no new input (see session_ends_expected)


@dataclass(frozen=True)
class Scenario:
    """One worker configuration."""

    name: str
    label: str
    partners: tuple[str, ...]  # partner formats, each its own partner named after it


CANONICAL = Scenario("canonical", "worker, canonical outputs only (no partners)", ())
ALL_PARTNERS = Scenario("partners", "worker, all 5 default partners", tuple(FORMATS))


# The workload


def generate(spec: WorkloadSpec) -> tuple[Messages, float]:
    """Every (key, value) message of the workload, and the seconds it took."""
    started = time.perf_counter()
    messages = list(generate_keyed_messages(spec))
    return messages, time.perf_counter() - started


def expected_outputs(messages: Messages) -> Expected:
    """Run offline mode (no partners) over the messages: what the worker must write."""
    config = Config(partners=())
    with tempfile.TemporaryDirectory(prefix="bench-worker-offline-") as directory:
        source = Path(directory) / "input.jsonl"
        source.write_bytes(b"".join(value + b"\n" for _, value in messages))
        output = Path(directory) / "out"
        with source.open("rb") as handle:
            summary = run_offline(handle, output, config, time.time_ns() // 1_000_000)
        with (output / "enriched.jsonl").open("rb") as enriched:
            enriched_lines = sum(1 for _ in enriched)
        session_ends = session_ends_expected(output / "sessions.jsonl")
    dead = sum(summary.dead_letters.values())
    return Expected(
        messages=summary.lines,
        events=summary.events_applied + summary.duplicates + dead,
        enriched=enriched_lines,
        session_starts=summary.sessions_started,
        session_ends=session_ends,
    )


def session_ends_expected(sessions: Path) -> int:
    """The session_ends of offline mode's `sessions` that a worker writes with no new input.

    Offline mode closes at the end of the input every session still open: as a timeout when it
    was backgrounded (the worker's clock does the same once caught up), as idle when it was in
    the foreground (the worker waits idle_timeout_s for that). A device's last session is one
    of those unless it ended by app_terminate: every other end comes with a newer session.
    """
    ends = 0
    last: dict[tuple[str, str], tuple[int, str]] = {}
    with sessions.open("rb") as handle:
        for line in handle:
            record = orjson.loads(line)
            if record["type"] != "session_end":
                continue
            ends += 1
            device = (record["app_id"], record["device_id"])
            number = record["session_number"]
            if device not in last or number > last[device][0]:
                last[device] = (number, record["end_reason"])
    return ends - sum(1 for _, reason in last.values() if reason == "idle")


async def create_topics(bootstrap: str, names: list[str]) -> None:
    """Create topics with PARTITIONS partitions (auto-creation would give one)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # As `sessionize topics create` would: room for the pipeline's largest record.
        room = {"max.message.bytes": str(max_message_bytes(load_config(None, env={})))}
        await admin.create_topics(
            [NewTopic(name, PARTITIONS, 1, topic_configs=room) for name in names]
        )
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: Messages) -> float:
    """Send every message without awaiting each delivery; seconds until all are acked."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=100,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        for key, value in messages:
            await producer.send(topic, value, key=key)  # waits for buffer space only
        await producer.flush()
        return time.perf_counter() - started
    finally:
        await producer.stop()


# Baseline: the plain aiokafka loop (runs in a child process)


def enriched_events(value: bytes, received_ms: int) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) of each event of a message (a batch's events one by one), one field added."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return
    if type(document) is not dict:
        return
    events = [document] if "type" in document else document.get("events")
    if type(events) is not list:
        return
    device_id = document.get("device_id")
    for event in events:
        if type(event) is dict:
            event["received_ms"] = received_ms
            owner = event.get("device_id", device_id)
            key = owner.encode() if isinstance(owner, str) else None
            yield key, orjson.dumps(event)


async def baseline_loop(bootstrap: str, source: str, sink: str, messages: int) -> dict[str, Any]:
    """Consume `messages` messages of `source`, produce one record per event to `sink`."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"{sink}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    # The worker's producer settings, less the transaction.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await consumer.start()
    await producer.start()
    consumed = events = 0
    first = 0.0
    cpu_at_first = 0.0
    try:
        while consumed < messages:
            batches = await consumer.getmany(timeout_ms=1000)
            if batches and not first:
                first = time.perf_counter()
                cpu_at_first = time.process_time()
            received_ms = time.time_ns() // 1_000_000
            for records in batches.values():
                consumed += len(records)
                for record in records:
                    for key, value in enriched_events(record.value or b"", received_ms):
                        await producer.send(sink, value, key=key)
                        events += 1
        await producer.flush()
        seconds = time.perf_counter() - first
        cpu = time.process_time() - cpu_at_first
    finally:
        await producer.stop()
        await consumer.stop()
    return {"messages": consumed, "events": events, "seconds": seconds, "cpu_s": cpu}


def run_baseline(bootstrap: str, source: str, sink: str, messages: int) -> dict[str, Any]:
    """`baseline_loop` in a fresh interpreter (its own core share, its own GIL)."""
    command = [
        sys.executable,
        __file__,
        "--baseline-child",
        f"--bootstrap={bootstrap}",
        f"--source={source}",
        f"--sink={sink}",
        f"--messages={messages}",
    ]
    result = subprocess.run(command, capture_output=True, check=True, text=True, cwd=REPO)
    measured: dict[str, Any] = json.loads(result.stdout)
    return measured


# The worker


@dataclass(frozen=True)
class WorkerRun:
    """Names and files of one worker run."""

    name: str  # the Faust app id and the prefix of every output topic
    scenario: Scenario
    directory: Path
    bootstrap: str
    source: str

    @property
    def config_path(self) -> Path:
        return self.directory / "config.toml"

    def topic(self, role: str) -> str:
        return f"{self.name}.{role}"

    def write_config(self) -> Config:
        lines = [] if self.scenario.partners else ["partners = []"]
        lines += [
            "[kafka]",
            f'bootstrap = "{self.bootstrap}"',
            "[topics]",
            f'input = "{self.source}"',
            f'sessions = "{self.topic("sessions")}"',
            f'enriched = "{self.topic("enriched")}"',
            f'deadletter = "{self.topic("deadletter")}"',
            f"partitions = {PARTITIONS}",
            "[worker]",
            f'app_id = "{self.name}"',
            f'data_dir = "{self.directory / "data"}"',
            "web_port = 0",  # any free port
        ]
        for partner in self.scenario.partners:
            lines += [
                "[[partners]]",
                f'name = "{partner}"',
                f'format = "{partner}"',
                f'topic = "{self.topic("partner." + partner)}"',
            ]
        self.config_path.write_text("\n".join(lines) + "\n")
        return load_config(self.config_path, env={})

    def command(self, profile_path: Path | None) -> list[str]:
        profiler = ["-m", "cProfile", "-o", str(profile_path)] if profile_path else []
        worker = ["-m", "pipeline", "worker", "--config", str(self.config_path)]
        return [sys.executable, *profiler, *worker]


@dataclass
class Progress:
    """What the counting consumer has seen of a worker's committed output."""

    enriched: int = 0
    session_starts: int = 0
    session_ends: int = 0
    first_output: float = 0.0
    last_output: float = 0.0
    complete: float = 0.0  # enriched and session_starts complete: the end of the measure
    ends_complete: float = 0.0  # session_ends complete too
    peak_rss_kib: int = 0
    cpu_at_first: float = 0.0  # the worker's CPU seconds when its first output was seen
    cpu_at_end: float = 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far; 0 once it is gone."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def peak_rss_kib(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, in KiB; 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def watch_worker(
    run: WorkerRun, worker: subprocess.Popen[bytes], expected: Expected
) -> Progress:
    """Count committed enriched records, session_starts and session_ends until the run is
    complete: the measure ends with the last session_start, the run with the last session_end."""
    enriched, sessions = run.topic("enriched"), run.topic("sessions")
    consumer = AIOKafkaConsumer(
        enriched,
        sessions,
        bootstrap_servers=run.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        metadata_max_age_ms=1000,
    )
    progress = Progress()
    await consumer.start()
    next_rss = 0.0
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=250)
            now = time.perf_counter()
            for tp, records in batches.items():
                if tp.topic == enriched:
                    progress.enriched += len(records)
                else:
                    starts = sum(1 for r in records if r.value and SESSION_START in r.value)
                    progress.session_starts += starts
                    progress.session_ends += len(records) - starts
            if batches:
                if not progress.first_output:
                    progress.first_output = now
                    progress.cpu_at_first = cpu_seconds(worker.pid)
                progress.last_output = now
                progress.cpu_at_end = cpu_seconds(worker.pid)
            if now >= next_rss:
                progress.peak_rss_kib = max(progress.peak_rss_kib, peak_rss_kib(worker.pid))
                next_rss = now + 1.0
            if (
                not progress.complete
                and progress.enriched >= expected.enriched
                and progress.session_starts >= expected.session_starts
            ):
                progress.complete = now
            if progress.complete and progress.session_ends >= expected.session_ends:
                progress.ends_complete = now
                break
            if worker.poll() is not None:
                raise RuntimeError(f"worker {run.name} exited with {worker.returncode}")
            if progress.complete:
                if now - progress.complete > ENDS_WAIT_S:
                    break  # session_ends incomplete: reported as such
            elif now - (progress.last_output or now) > STALL_S:
                break  # incomplete: reported as such
        progress.peak_rss_kib = max(progress.peak_rss_kib, peak_rss_kib(worker.pid))
    finally:
        await consumer.stop()
    return progress


async def count_committed(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Records per topic visible to read_committed readers (the writer has stopped)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    counts = dict.fromkeys(topics, 0)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 5.0:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                break
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                counts[tp.topic] += len(records)
            if batches:
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return counts


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal a child, wait for it, kill it when it does not stop in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file (empty when there is none)."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def run_worker(
    run: WorkerRun, expected: Expected, profile_path: Path | None = None
) -> dict[str, Any]:
    """Start a worker, measure it until its outputs are complete, stop it, count its topics."""
    run.directory.mkdir(parents=True)
    config = run.write_config()
    asyncio.run(ensure_topics(config))
    load = os.getloadavg()[0]
    log_path = run.directory / "worker.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        launched = time.perf_counter()
        worker = subprocess.Popen(
            run.command(profile_path), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            progress = asyncio.run(watch_worker(run, worker, expected))
        except BaseException:
            stop_process(worker, signal.SIGKILL)
            print(log_tail(log_path), file=sys.stderr)
            raise
        finally:
            stop_process(worker, signal.SIGINT if profile_path else signal.SIGTERM)
    outputs = [run.topic(role) for role in ("enriched", "sessions", "deadletter")] + [
        p.topic for p in config.partners
    ]
    counts = asyncio.run(count_committed(run.bootstrap, outputs))
    end = progress.complete or progress.last_output
    seconds = end - progress.first_output if progress.first_output else float("nan")
    return {
        "complete": bool(progress.complete),
        "enriched_seen": progress.enriched,
        "session_starts_seen": progress.session_starts,
        "session_ends_seen": progress.session_ends,
        "ends_after_s": (
            progress.ends_complete - progress.complete if progress.ends_complete else float("nan")
        ),
        "startup_s": progress.first_output - launched if progress.first_output else float("nan"),
        "seconds": seconds,
        # A run shorter than one progress poll cannot be timed (e.g. a --devices 2000 smoke run).
        "events_per_s": expected.events / seconds if seconds > 0 else float("nan"),
        "cpu_s": progress.cpu_at_end - progress.cpu_at_first,
        "peak_rss_mib": progress.peak_rss_kib / 1024,
        "exit_code": worker.returncode,
        "load_average_before": load,
        "records": counts,
        "log": str(log_path),
    }


# The profile


# (group, test on (file, line, function name)), first match wins; unmatched functions (builtins,
# the standard library) inherit the groups of their callers, in proportion to the time spent.
IDLE = "idle (waiting in epoll)"
STARTUP = "startup (imports)"
GROUPS: list[tuple[str, Callable[[str, int, str], bool]]] = [
    (IDLE, lambda f, _, n: "select.epoll" in n),
    (STARTUP, lambda f, _, n: "importlib" in f or n.startswith("<built-in method _imp")),
    ("socket syscalls (send/recv)", lambda f, _, n: "of '_socket.socket' objects" in n),
    ("logging (records made, then dropped)", lambda f, _, n: "/logging/" in f),
    ("orjson", lambda f, _, n: "orjson" in n),
    (
        "our parse/validate",
        lambda f, _, n: (
            f.endswith(("pipeline/input/events.py", "pipeline/input/schemas.py"))
            or "fastjsonschema" in f
            or (f == "<string>" and n.startswith("validate"))
        ),
    ),
    ("partner formatting", lambda f, _, n: "/pipeline/partners/" in f),
    (
        "engine (rules, routing, expiry index)",
        lambda f, _, n: (
            "/pipeline/engine/" in f
            or f.endswith(("pipeline/processing/processor.py", "pipeline/processing/routing.py"))
            or f.endswith(("pipeline/streaming/expiry.py", "/uuid.py"))
        ),
    ),
    (
        "changelog/checkpoint",
        lambda f, _, n: (
            f.endswith(("pipeline/streaming/checkpoint.py", "pipeline/streaming/recovery.py"))
            or (f.endswith("pipeline/streaming/codec.py") and n == "to_json")
        ),
    ),
    (
        "our record batching (TransactionalSink, if present)",
        lambda f, _, n: f.endswith(
            ("pipeline/sinks/kafka.py", "pipeline/streaming/partitioning.py")
        ),
    ),
    ("streaming core and worker adapter (rest of pipeline/)", lambda f, _, n: "/pipeline/" in f),
    (
        "aiokafka produce/send",
        lambda f, _, n: (
            "/aiokafka/producer/" in f
            or "Builder" in n
            or (
                f.endswith(
                    ("aiokafka/record/default_records.py", "aiokafka/record/legacy_records.py")
                )
                and "uild" in n
            )
        ),
    ),
    (
        "aiokafka consume",
        lambda f, _, n: (
            "/aiokafka/consumer/" in f
            or "/aiokafka/record/" in f
            or "aiokafka.record" in n
            or "ConsumerRecord" in n
        ),
    ),
    (
        "aiokafka network/protocol (both ways)",
        lambda f, _, n: "/aiokafka/" in f and "partitioner" not in f,
    ),
    ("Faust/mode (fetcher, services, recovery)", lambda f, _, n: "/faust/" in f or "/mode/" in f),
    ("asyncio event loop", lambda f, _, n: "/asyncio/" in f or "_asyncio" in n),
]
OTHER = "other"


class ProfileReport:
    """A cProfile dump of the worker, grouped by layer."""

    def __init__(self, path: Path) -> None:
        self.stats = pstats.Stats(str(path))
        self.raw: dict[Any, Any] = self.stats.stats  # type: ignore[attr-defined]
        self._groups: dict[Any, dict[str, float]] = {}

    def own_group(self, func: tuple[str, int, str]) -> str | None:
        filename, line, name = func
        for group, test in GROUPS:
            if test(filename, line, name):
                return group
        return None

    def groups_of(self, func: Any, visiting: frozenset[Any] = frozenset()) -> dict[str, float]:
        """The groups `func`'s time belongs to, as fractions summing to 1."""
        if func in self._groups:
            return self._groups[func]
        own = self.own_group(func)
        if own is not None:
            return {own: 1.0}
        callers: dict[Any, Any] = self.raw[func][4]
        weights = {c: v[3] for c, v in callers.items() if c not in visiting and c in self.raw}
        total = sum(weights.values())
        if total <= 0:
            return {OTHER: 1.0}
        shares: dict[str, float] = defaultdict(float)
        for caller, weight in weights.items():
            for group, fraction in self.groups_of(caller, visiting | {func}).items():
                shares[group] += fraction * weight / total
        # Memoized even inside a cycle: an approximation that keeps this linear.
        self._groups[func] = dict(shares)
        return shares

    def by_group(self) -> dict[str, float]:
        """Own time (seconds) per group; sums to the profile's total."""
        seconds: dict[str, float] = defaultdict(float)
        for func, (_, _, tottime, _, _) in self.raw.items():
            for group, fraction in self.groups_of(func).items():
                seconds[group] += tottime * fraction
        return dict(seconds)

    def cumulative(self, file_suffix: str, name: str) -> tuple[int, float]:
        """(calls, cumulative seconds) of one function."""
        for (filename, _, function), (_, calls, _, cumtime, _) in self.raw.items():
            if filename.endswith(file_suffix) and function == name:
                return calls, cumtime
        return 0, 0.0


# Pipeline functions worth a cumulative figure; those absent from a profile are not shown.
ENTRY_POINTS = [
    ("pipeline/streaming/worker.py", "on_fetch", "per fetch, everything"),
    ("pipeline/streaming/core.py", "_apply_message", "one message: parse, rules, outputs"),
    ("pipeline/processing/step.py", "run", "the one-message step"),
    ("pipeline/input/events.py", "parse_message", "parse + validate"),
    ("pipeline/streaming/core.py", "_apply_event", "state lookup + engine"),
    ("pipeline/processing/processor.py", "apply", "engine (all profiles) + routing"),
    ("pipeline/partners/__init__.py", "partner_records", "partner formatting"),
    ("pipeline/streaming/core.py", "_schedule", "deadline index"),
    ("pipeline/streaming/outputs.py", "send_outputs", "serialize + hand over outputs"),
    ("pipeline/sinks/kafka.py", "add", "TransactionalSink.add: record into a batch"),
    ("pipeline/sinks/kafka.py", "ship", "TransactionalSink.ship: full batches to the producer"),
    ("pipeline/sinks/kafka.py", "flush", "TransactionalSink.flush: ship batches, await them"),
    ("pipeline/streaming/partitioning.py", "partition_for", "murmur2 of the device id"),
    ("pipeline/streaming/checkpoint.py", "commit", "checkpoints (changelog, offsets, commit)"),
    ("pipeline/streaming/codec.py", "to_json", "table entry serialization"),
    ("pipeline/streaming/worker.py", "_on_tick", "expiry timer"),
    ("aiokafka/partitioner.py", "murmur2", "pure-Python murmur2 (worker + producer)"),
]


def print_profile(path: Path, scenario: Scenario, events: int) -> None:
    """Where a profiled worker spent its time: by group, pipeline functions, top functions."""
    report = ProfileReport(path)
    total: float = report.stats.total_tt  # type: ignore[attr-defined]
    groups = report.by_group()
    idle, startup = groups.get(IDLE, 0.0), groups.get(STARTUP, 0.0)
    busy = total - idle - startup
    print(f"\n## Profile: {scenario.label}, under cProfile\n")
    print(
        f"profiled wall time {total:.1f} s: {idle:.1f} s idle in epoll, {startup:.1f} s imports, "
        f"{busy:.1f} s busy ({busy / events * 1e6:.1f} µs per input event)\n"
    )
    print("| group (own time; builtins and stdlib go to their callers) | s | % of busy |")
    print("|---|---:|---:|")
    for group, seconds in sorted(groups.items(), key=lambda item: -item[1]):
        if group not in (IDLE, STARTUP):
            print(f"| {group} | {seconds:.1f} | {100 * seconds / busy:.1f} |")
    print("\n| pipeline function | calls | cumulative s | % of busy | what |")
    print("|---|---:|---:|---:|---|")
    for file_suffix, name, what in ENTRY_POINTS:
        calls, cumtime = report.cumulative(file_suffix, name)
        if not calls:
            continue
        print(
            f"| `{name}` ({file_suffix}) | {calls:,} | {cumtime:.1f} "
            f"| {100 * cumtime / busy:.1f} | {what} |"
        )
    for column, title in ((3, "cumulative"), (2, "own (total)")):
        rows = sorted(report.raw.items(), key=lambda item: item[1][column], reverse=True)
        print(f"\ntop {TOP} by {title} time:\n")
        print("| ncalls | tottime s | cumtime s | function | group |")
        print("|---:|---:|---:|---|---|")
        shown = 0
        for func, (_, calls, tottime, cumtime, _) in rows:
            if report.own_group(func) in (IDLE, STARTUP):
                continue
            shares = report.groups_of(func)
            group = max(shares, key=lambda g: shares[g])
            print(f"| {calls:,} | {tottime:.2f} | {cumtime:.2f} | `{_label(func)}` | {group} |")
            shown += 1
            if shown == TOP:
                break


def _label(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    for marker in ("/pipeline/", "/site-packages/", "/lib/python3"):
        if marker in filename:
            filename = filename[filename.index(marker) + 1 :]
            break
    return f"{filename}:{line}({name})" if line else name


# The benchmark


def code_version() -> str:
    """The repository's commit, and whether pipeline/ has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "pipeline"],
            capture_output=True,
            text=True,
            cwd=REPO,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit}{' with uncommitted changes in pipeline/' if dirty else ''}"


def machine() -> str:
    """nproc, the CPU model and the Python version."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


@contextlib.contextmanager
def broker(directory: Path) -> Iterator[str]:
    """The bootstrap of $KAFKA_BOOTSTRAP, or of a broker started here and stopped after."""
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP"):
        yield bootstrap
        return
    started = localkafka.start(directory / "kafka")
    try:
        yield started.bootstrap
    finally:
        if not started.is_alive():
            print(f"the broker died; its log ends:\n{log_tail(started.data_dir / 'broker.log')}")
        started.stop()


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    step: str
    seconds: float
    events_per_s: float
    cpu_s: float | None  # CPU seconds of the measured process over `seconds`
    notes: str


def benchmark(args: argparse.Namespace) -> None:
    spec = WorkloadSpec(devices=args.devices, events_per_device=10, batch_size=20, seed=args.seed)
    stamp = f"bench-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"code: {code_version()}")
    print(f"workload: {spec}", flush=True)
    messages, generation_s = generate(spec)
    expected = expected_outputs(messages)
    input_mib = sum(len(v) for _, v in messages) / 2**20
    print(
        f"generated {expected.messages:,} messages ({input_mib:,.0f} MiB), {expected.events:,} "
        f"events ({expected.enriched:,} applied, {expected.session_starts:,} sessions, "
        f"{expected.session_ends:,} session_ends due with no new input) in "
        f"{generation_s:.1f} s",
        flush=True,
    )
    rows = [Row("generate (pipeline.workload.generator)", generation_s, 0.0, None, "")]
    scenarios = [CANONICAL] if args.canonical_only else [CANONICAL, ALL_PARTNERS]
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as temp, broker(Path(temp)) as boot:
        source = f"{stamp}.raw"
        asyncio.run(create_topics(boot, [source, f"{stamp}.baseline"]))
        produce_s = asyncio.run(produce(boot, source, messages))
        del messages
        print(f"produced in {produce_s:.1f} s", flush=True)
        rows.append(
            Row(
                "produce input (one aiokafka producer, linger 100 ms)",
                produce_s,
                expected.events / produce_s,
                None,
                f"{expected.messages / produce_s:,.0f} messages/s",
            )
        )
        base = run_baseline(boot, source, f"{stamp}.baseline", expected.messages)
        print(f"baseline: {json.dumps(base)}", flush=True)
        rows.append(
            Row(
                "baseline: plain aiokafka loop, orjson, one record per event",
                base["seconds"],
                base["events"] / base["seconds"],
                base["cpu_s"],
                f"{base['events']:,} records out",
            )
        )
        for scenario in scenarios:
            run = WorkerRun(
                f"{stamp}-{scenario.name}", scenario, Path(temp) / scenario.name, boot, source
            )
            result = run_worker(run, expected)
            print(f"{scenario.label}: {json.dumps(result)}", flush=True)
            rows.append(worker_row(scenario.label, result, expected))
        for scenario in scenarios if args.profile else []:
            name = f"profile-{scenario.name}"
            run = WorkerRun(f"{stamp}-{name}", scenario, Path(temp) / name, boot, source)
            profile_dir = args.profile_out or Path(temp)
            profile_dir.mkdir(parents=True, exist_ok=True)
            profile_path = profile_dir / f"worker-{scenario.name}.prof"
            result = run_worker(run, expected, profile_path)
            print(f"{scenario.label} under cProfile: {json.dumps(result)}", flush=True)
            if profile_path.exists():
                print_profile(profile_path, scenario, expected.events)
            else:
                print(f"no profile written; worker log:\n{log_tail(Path(result['log']))}")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    print_table(rows, expected)


def worker_row(label: str, result: dict[str, Any], expected: Expected) -> Row:
    records = ", ".join(
        f"{topic.rsplit('.', 1)[-1]} {n:,}" for topic, n in result["records"].items()
    )
    state = "" if result["complete"] else "INCOMPLETE; "
    if result["session_starts_seen"] != expected.session_starts:
        state += (
            f"{result['session_starts_seen']:,} session_starts where offline mode has "
            f"{expected.session_starts:,}; "
        )
    if result["session_ends_seen"] != expected.session_ends:
        state += (
            f"{result['session_ends_seen']:,} session_ends where {expected.session_ends:,} "
            "are due; "
        )
    state += f"ends after {result['ends_after_s']:.1f} s more; "
    notes = (
        f"{state}startup to first output {result['startup_s']:.1f} s, peak RSS "
        f"{result['peak_rss_mib']:,.0f} MiB; records: {records}"
    )
    return Row(label, result["seconds"], result["events_per_s"], result["cpu_s"], notes)


def print_table(rows: list[Row], expected: Expected) -> None:
    baseline = next(row for row in rows if row.step.startswith("baseline"))
    print("\n| step | seconds | events/s | x baseline | CPU s | CPU µs/event | notes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        rate = f"{row.events_per_s:,.0f}" if row.events_per_s else ""
        ratio = f"{row.events_per_s / baseline.events_per_s:.2f}" if row.events_per_s else ""
        cpu = f"{row.cpu_s:.1f}" if row.cpu_s is not None else ""
        per_event = f"{row.cpu_s / expected.events * 1e6:.0f}" if row.cpu_s is not None else ""
        print(
            f"| {row.step} | {row.seconds:.1f} | {rate} | {ratio} | {cpu} | {per_event} "
            f"| {row.notes} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--profile", action="store_true", help="then run each worker scenario under cProfile"
    )
    parser.add_argument("--profile-out", type=Path, help="keep the .prof files in this folder")
    parser.add_argument(
        "--canonical-only", action="store_true", help="skip the measured run with partners"
    )
    parser.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        measured = asyncio.run(baseline_loop(args.bootstrap, args.source, args.sink, args.messages))
        print(json.dumps(measured))
        return 0
    benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
