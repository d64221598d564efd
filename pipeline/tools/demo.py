"""`sessionize demo`: the whole pipeline on a real broker, in one command.

Steps: a broker (the one given, or a local one from `pipeline.kafka.local` in DIR/kafka), the
pipeline's topics, one worker subprocess with short timeouts (written to DIR/demo.toml, so
sessions close within the run), live generated traffic (`produce --devices`'s time warp and
pacing), a wait until every session has closed, then every output topic is read back. What the
run made is summarized for a person (stdout and DIR/summary.txt), written like offline mode's
outputs (DIR/sessions.jsonl, enriched.jsonl, dead_letter.jsonl, partners/<name>.jsonl), and
drawn (DIR/timeline.html). Whatever happens, the worker and a broker it started are stopped.

SESSIONIZE_* settings of the environment are not applied to the demo: its config is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from pipeline.cli.kafka import (
    ProduceStats,
    TimeWarp,
    admin_call,
    plan_live,
    produce_live,
    read_topics,
    run_kafka,
)
from pipeline.cli.main import EXIT_KAFKA, CliError
from pipeline.config import Config, load_config
from pipeline.partners import FORMATS
from pipeline.tools.timeline import render_timeline
from pipeline.vocabulary import wall_ms
from pipeline.workload.generator import WorkloadSpec

SESSION_TIMEOUT_S: Final = 5
IDLE_TIMEOUT_S: Final = 15
GRACE_S: Final = 1
TIMELINE_DEVICES: Final = 6
WORKER_START_TIMEOUT_S: Final = 90.0
WORKER_STOP_TIMEOUT_S: Final = 10.0
_SAMPLE_CHARS: Final = 96


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What `sessionize demo` runs; the defaults are its flags' defaults."""

    output_dir: Path = Path("demo-out")
    duration_s: float = 30.0
    devices: int = 400
    rate: float = 150.0
    seed: int = 0
    bootstrap: str | None = None  # None: start a local broker
    timeout_s: float = 15.0


@dataclass(slots=True)
class DemoOutputs:
    """Every record the worker wrote, per output, in topic order per partition."""

    sessions: list[dict[str, Any]]
    enriched: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    partners: dict[str, list[dict[str, Any]]]


def run_demo(options: DemoOptions) -> str:
    """Run the demo; returns the summary (also written to DIR/summary.txt)."""
    from aiokafka.errors import KafkaError

    output_dir = options.output_dir.resolve()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create output directory {output_dir}: {exc.strerror}") from None
    try:
        with contextlib.ExitStack() as stack:
            return _run(stack, options, output_dir)
    except KafkaError as exc:
        raise CliError(f"Kafka failed the demo: {exc}", EXIT_KAFKA) from None


def _run(stack: contextlib.ExitStack, options: DemoOptions, output_dir: Path) -> str:
    # Broker, config and topics.
    if options.bootstrap:
        bootstrap = options.bootstrap
        names = f"demo-{uuid.uuid4().hex[:8]}"  # a shared broker: topics of this run only
    else:
        bootstrap = stack.enter_context(_local_broker(output_dir / "kafka"))
        names = ""
    config_path = output_dir / "demo.toml"
    config_path.write_text(demo_config(bootstrap, names, output_dir / "worker-data"))
    config = load_config(config_path, env={})
    _step(f"config: {config_path}")
    from pipeline.kafka.topics import ensure_topics

    run_kafka(admin_call(config, options.timeout_s, ensure_topics))
    _step(f"topics ready on {bootstrap}")

    # The worker, the live traffic, and the wait for its last sessions.
    worker_log = output_dir / "worker.log"
    worker = stack.enter_context(_worker_process(config_path, worker_log))
    run_kafka(_wait_until_worker_joins(config, worker, worker_log))
    _step(f"worker running (pid {worker.pid}, log {worker_log})")
    spec = WorkloadSpec(devices=options.devices, seed=options.seed, start_ms=wall_ms())
    warp = TimeWarp.for_sessions(config.sessions)
    plan = plan_live(spec, warp, options.rate, options.duration_s)
    _step(
        f"sending live traffic for {options.duration_s:g} s: {plan.devices} devices, "
        f"about {options.rate:g} events/s"
    )
    topic = config.topics.input
    stats = run_kafka(produce_live(config, topic, plan, options.timeout_s, "  live traffic"))
    _step(stats.summary_line())
    if stats.delivered == 0:
        raise CliError(f"no message reached {topic}: {stats.first_error}", EXIT_KAFKA)
    _step("waiting for the last sessions to close")
    run_kafka(_wait_until_sessions_close(config, options.timeout_s, worker, worker_log))

    # What the worker made: read, written down, drawn, summarized.
    outputs = run_kafka(_read_outputs(config, options.timeout_s))
    _stop_process(worker)
    _write_outputs(outputs, output_dir)
    subtitle = (
        f"{TIMELINE_DEVICES} of {plan.devices} devices; session timeout {SESSION_TIMEOUT_S} s, "
        f"idle timeout {IDLE_TIMEOUT_S} s. Hover a bar or a mark for details."
    )
    page = render_timeline(
        [*outputs.sessions, *outputs.enriched],
        devices=TIMELINE_DEVICES,
        title="sessionize demo: session timeline",
        subtitle=subtitle,
    )
    (output_dir / "timeline.html").write_text(page)
    summary = summarize(
        outputs,
        stats,
        asked_rate=options.rate,
        devices=plan.devices,
        bootstrap=bootstrap,
        output_dir=output_dir,
    )
    (output_dir / "summary.txt").write_text(summary + "\n")
    return summary


def demo_config(bootstrap: str, names: str, data_dir: Path) -> str:
    """The demo's TOML: short timeouts, every partner format; topics prefixed by `names`."""
    prefix = f"{names}." if names else ""
    lines = [
        "# Written by `sessionize demo`: short timeouts so sessions close within the run.",
        "[sessions]",
        f"session_timeout_s = {SESSION_TIMEOUT_S}",
        f"idle_timeout_s = {IDLE_TIMEOUT_S}",
        "",
        "[kafka]",
        f"bootstrap = {_toml_string(bootstrap)}",
        "",
        "[topics]",
        f"input = {_toml_string(prefix + 'events.raw')}",
        f"sessions = {_toml_string(prefix + 'sessions')}",
        f"enriched = {_toml_string(prefix + 'events.enriched')}",
        f"deadletter = {_toml_string(prefix + 'events.deadletter')}",
        "partitions = 4",
        "",
        "[worker]",
        f"app_id = {_toml_string(names or 'sessionize-demo')}",
        f"grace_s = {GRACE_S}",
        "tick_s = 0.5",
        f"data_dir = {_toml_string(str(data_dir))}",
    ]
    for name in FORMATS:
        lines += [
            "",
            "[[partners]]",
            f"name = {_toml_string(name)}",
            f"format = {_toml_string(name)}",
            f"topic = {_toml_string(f'{prefix}partner.{name}')}",
        ]
    return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    return orjson.dumps(text).decode()  # a JSON string is a valid TOML basic string


def _step(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _local_broker(data_dir: Path) -> Iterator[str]:
    from pipeline.kafka.local import LocalKafkaError, start

    _step(f"starting a local Kafka broker in {data_dir}")
    started = time.monotonic()
    try:
        broker = start(data_dir)
    except LocalKafkaError as exc:
        raise CliError(f"cannot start a local Kafka broker: {exc.summary}", EXIT_KAFKA) from None
    _step(f"broker at {broker.bootstrap} ({time.monotonic() - started:.1f} s)")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
        _step("broker stopped")


@contextlib.contextmanager
def _worker_process(config_path: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONIZE_")}
    if "SESSIONIZE_CACHE" in os.environ:
        env["SESSIONIZE_CACHE"] = os.environ["SESSIONIZE_CACHE"]
    env["PYTHONUNBUFFERED"] = "1"
    data_dir = load_config(config_path, env={}).worker.data_dir
    shutil.rmtree(data_dir, ignore_errors=True)  # a fresh broker: no state to resume
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
        _stop_process(worker)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(WORKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        _step(f"worker still running {WORKER_STOP_TIMEOUT_S:.0f} s after SIGTERM: killed")
        return
    _step(f"worker stopped (exit {process.returncode})")


async def _wait_until_worker_joins(
    config: Config, worker: subprocess.Popen[bytes], log_path: Path
) -> None:
    """Until the worker's consumer group is Stable: traffic sent before would pile up."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**config.kafka.client_options())
    await admin.start()
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    try:
        while True:
            _check_alive(worker, log_path)
            if time.monotonic() > deadline:
                raise CliError(
                    f"the worker did not join within {WORKER_START_TIMEOUT_S:.0f} s; "
                    f"see {log_path}",
                    EXIT_KAFKA,
                )
            if await _group_state(admin, config.worker.app_id) == "Stable":
                return
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


def _check_alive(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    if worker.poll() is not None:
        raise CliError(
            f"the worker exited with code {worker.returncode}; see {log_path}", EXIT_KAFKA
        )


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


async def _wait_until_sessions_close(
    config: Config, timeout_s: float, worker: subprocess.Popen[bytes], log_path: Path
) -> None:
    """Until the worker has read all input and every session has ended, or the longest timeout
    (idle) + grace + a margin has passed."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError
    from aiokafka.structs import TopicPartition

    from pipeline.kafka.topics import input_partitions

    started: set[str] = set()
    ended: set[str] = set()
    caught_up = False

    def on_record(record: Any) -> None:
        session = orjson.loads(record.value)
        (started if session["type"] == "session_start" else ended).add(session["session_id"])

    def done() -> bool:
        _check_alive(worker, log_path)
        return caught_up and started <= ended

    async def watch_input() -> None:
        nonlocal caught_up
        partitions = [
            TopicPartition(config.topics.input, p) for p in range(await input_partitions(config))
        ]
        consumer = AIOKafkaConsumer(**config.kafka.client_options())
        admin = AIOKafkaAdminClient(**config.kafka.client_options())
        await consumer.start()
        await admin.start()
        try:
            ends = await consumer.end_offsets(partitions)
            while not caught_up:
                with contextlib.suppress(KafkaError):  # asked again in half a second
                    offsets = await admin.list_consumer_group_offsets(config.worker.app_id)
                    caught_up = all(
                        end == 0 or (p in offsets and offsets[p].offset >= end)
                        for p, end in ends.items()
                    )
                await asyncio.sleep(0.5)
        finally:
            await consumer.stop()
            await admin.close()

    limit_s = max(IDLE_TIMEOUT_S, SESSION_TIMEOUT_S) + GRACE_S + 10
    watcher = asyncio.create_task(watch_input())
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
        _step(f"{len(started - ended)} sessions still open after {limit_s} s")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _read_outputs(config: Config, timeout_s: float) -> DemoOutputs:
    topics = config.topics
    partner_of = {p.topic: p.name for p in config.partners}
    outputs = DemoOutputs([], [], [], {p.name: [] for p in config.partners})
    by_topic = {
        topics.sessions: outputs.sessions,
        topics.enriched: outputs.enriched,
        topics.deadletter: outputs.dead_letters,
    }
    by_topic.update({topic: outputs.partners[name] for topic, name in partner_of.items()})

    def on_record(record: Any) -> None:
        by_topic[record.topic].append(orjson.loads(record.value))

    await read_topics(config, list(by_topic), on_record, timeout_s=timeout_s)
    return outputs


def _write_outputs(outputs: DemoOutputs, output_dir: Path) -> None:
    def write(path: Path, records: list[dict[str, Any]]) -> None:
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))

    write(output_dir / "sessions.jsonl", outputs.sessions)
    write(output_dir / "enriched.jsonl", outputs.enriched)
    write(output_dir / "dead_letter.jsonl", outputs.dead_letters)
    (output_dir / "partners").mkdir(exist_ok=True)
    for name, records in outputs.partners.items():
        write(output_dir / "partners" / f"{name}.jsonl", records)


def summarize(
    outputs: DemoOutputs,
    stats: ProduceStats,
    *,
    asked_rate: float,
    devices: int,
    bootstrap: str,
    output_dir: Path,
) -> str:
    """The demo's summary: what went in, the sessions, dead letters, partners, files."""
    starts = [r for r in outputs.sessions if r["type"] == "session_start"]
    ends = [r for r in outputs.sessions if r["type"] == "session_end"]
    still_open = len({r["session_id"] for r in starts} - {r["session_id"] for r in ends})
    reasons = Counter(r["end_reason"] for r in ends)
    rate = stats.events / stats.elapsed_s if stats.elapsed_s else 0.0
    dead = Counter(r["reason"] for r in outputs.dead_letters)
    lines = [
        f"sessionize demo: {stats.elapsed_s:.0f} s of live app traffic through Kafka at "
        f"{bootstrap} and one worker",
        f"(session timeout {SESSION_TIMEOUT_S} s, idle timeout {IDLE_TIMEOUT_S} s, "
        f"grace {GRACE_S} s)",
        "",
        _row(
            "input",
            f"{stats.events:,} events in {stats.delivered:,} messages from {devices:,} devices: "
            f"{rate:.0f} events/s (asked {asked_rate:g})"
            + (f", {stats.failed} failed" if stats.failed else ""),
        ),
        _row("sessions", f"{len(starts):,} started, {len(ends):,} ended"),
        _row("  ended by", _counts(reasons) or "-"),
    ]
    traffic_end_ms = stats.started_ms + round(stats.elapsed_s * 1000)
    cut_off = sum(
        r["end_reason"] == "idle" and r["end_ts"] + IDLE_TIMEOUT_S * 1000 > traffic_end_ms
        for r in ends
    )
    if cut_off:
        lines.append(_row("", f"({cut_off} idle: in the foreground when the traffic stopped)"))
    if still_open:
        lines.append(_row("  still open", f"{still_open} (their end came after the demo)"))
    durations = sorted(r["duration_ms"] / 1000 for r in ends)
    if durations:
        lines.append(
            _row(
                "durations",
                f"median {statistics.median(durations):.1f} s · "
                f"p90 {_percentile(durations, 0.9):.1f} s · max {durations[-1]:.1f} s",
            )
        )
    lines.append(_row("enriched", f"{len(outputs.enriched):,} events"))
    lines.append(
        _row("dead letters", f"{sum(dead.values())}" + (f": {_counts(dead)}" if dead else ""))
    )
    lines.append(_row("partners", "records  sample"))
    width = max((len(name) for name in outputs.partners), default=0)
    for name, records in outputs.partners.items():
        sample = _sample(records[0]) if records else "-"
        lines.append(f"  {name.ljust(width)}  {len(records):>8,}  {sample}")
    lines.append(_row("files", f"{output_dir}/"))
    lines.append(_row("", "summary.txt, timeline.html (the picture), demo.toml, worker.log,"))
    lines.append(
        _row("", "sessions.jsonl, enriched.jsonl, dead_letter.jsonl, partners/<name>.jsonl")
    )
    return "\n".join(lines)


def _row(label: str, text: str) -> str:
    return f"{label:<14}{text}"


def _counts(counter: Counter[str]) -> str:
    return " · ".join(f"{key} {count:,}" for key, count in counter.most_common())


def _percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(ordered) * share // 1))
    return ordered[int(rank) - 1]


def _sample(record: Mapping[str, Any]) -> str:
    text = orjson.dumps(record).decode()
    return text if len(text) <= _SAMPLE_CHARS else text[: _SAMPLE_CHARS - 1] + "…"
