"""`sessionize demo`: the whole pipeline on a real broker, in one command.

Steps: a broker (the one given, or a local one from `pipeline.kafka.local` in DIR/kafka), the
pipeline's topics, one worker subprocess with short timeouts (written to DIR/demo.toml, so
sessions close within the run), live generated traffic (`produce --devices`'s time warp and
pacing), a wait until every session has closed, then every output topic is read back. What the
run made is summarized for a person (stdout and DIR/summary.txt), written like offline mode's
outputs (DIR/sessions.jsonl, enriched.jsonl, dead_letter.jsonl, partners/<name>.jsonl), and
drawn (DIR/timeline.html). Whatever happens, the worker and a broker it started are stopped.
The worker and the report are `pipeline.tools.demo_worker` and `pipeline.tools.demo_report`.

SESSIONIZE_* settings of the environment are not applied to the demo: its config is its own
(the command line reads SESSIONIZE_BOOTSTRAP, as every command does, into `bootstrap`).
The command line imports this module to parse its flags: what imports aiokafka comes late.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from pipeline.config import load_config
from pipeline.kafka.connection import BROKER_TIMEOUT_S, admin_call, run_kafka
from pipeline.kafka.sending import produce_live
from pipeline.partners import FORMATS
from pipeline.tools import demo_report, demo_worker
from pipeline.tools.demo_worker import WorkerFailed
from pipeline.tools.timeline import render_timeline
from pipeline.vocabulary import wall_ms
from pipeline.workload.live import TimeWarp, plan_live
from pipeline.workload.spec import WorkloadSpec

SESSION_TIMEOUT_S: Final = 5
IDLE_TIMEOUT_S: Final = 15
GRACE_S: Final = 1
TIMELINE_DEVICES: Final = 6


class DemoError(Exception):
    """The demo could not finish (no broker, a failed worker, Kafka refusing); one line."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What `sessionize demo` runs; the defaults are its flags' defaults."""

    output_dir: Path = Path("demo-out")
    duration_s: float = 30.0
    devices: int = 400
    rate: float = 150.0
    seed: int = 0
    bootstrap: str | None = None  # None: start a local broker
    timeout_s: float = BROKER_TIMEOUT_S


def run_demo(options: DemoOptions) -> str:
    """Run the demo in `options.output_dir` (created if missing); returns the summary (also
    written to DIR/summary.txt). DemoError when it cannot finish."""
    from aiokafka.errors import KafkaError

    from pipeline.kafka.connection import KafkaUnavailable

    output_dir = options.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as stack:
            return _run(stack, options, output_dir)
    except (KafkaUnavailable, WorkerFailed) as exc:
        raise DemoError(str(exc)) from None
    except KafkaError as exc:
        raise DemoError(f"Kafka failed the demo: {exc}") from None


def _run(stack: contextlib.ExitStack, options: DemoOptions, output_dir: Path) -> str:
    from pipeline.kafka.topics import ensure_topics

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
    run_kafka(admin_call(config, options.timeout_s, ensure_topics))
    _step(f"topics ready on {bootstrap}")

    # The worker, the live traffic, and the wait for its last sessions.
    worker_log = output_dir / "worker.log"
    worker = stack.enter_context(demo_worker.worker_process(config_path, worker_log, _step))
    run_kafka(demo_worker.wait_until_worker_joins(config, worker, worker_log))
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
        raise DemoError(f"no message reached {topic}: {stats.first_error}")
    _step("waiting for the last sessions to close")
    limit_s = max(IDLE_TIMEOUT_S, SESSION_TIMEOUT_S) + GRACE_S + 10
    still_open = run_kafka(
        demo_worker.wait_until_sessions_close(
            config, options.timeout_s, limit_s, worker, worker_log
        )
    )
    if still_open:
        _step(f"{still_open} sessions still open after {limit_s} s")

    # What the worker made: read, written down, drawn, summarized.
    outputs = run_kafka(demo_report.read_outputs(config, options.timeout_s))
    if (stopped := demo_worker.stop_worker(worker)) is not None:
        _step(stopped)
    demo_report.write_outputs(outputs, output_dir)
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
    summary = demo_report.summarize(
        outputs,
        stats,
        config,
        asked_rate=options.rate,
        devices=plan.devices,
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
        "web_port = 0",  # any free port: a demo must not need 6066
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
        raise DemoError(f"cannot start a local Kafka broker: {exc.summary}") from None
    _step(f"broker at {broker.bootstrap} ({time.monotonic() - started:.1f} s)")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
        _step("broker stopped")
