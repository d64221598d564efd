"""`sessionize produce | consume | topics | demo`: the commands that talk to Kafka.

They register with `pipeline.cli.command`. Settings come from `--config` and SESSIONIZE_* like
every command's; `--bootstrap` overrides the brokers and `--timeout` bounds the wait for them.
Every failure is one line on stderr: exit 2 when the command cannot run as asked (flags, config,
files, unknown partner), 3 when Kafka cannot be used (unreachable, unknown topic, failed sends).

Live generated load (`produce --devices N --rate R --duration S`)
------------------------------------------------------------------
The workload generator (`pipeline.workload.generator`) spreads the devices' first launches over a
day and draws their gaps against a 60 s session timeout and a 30 min idle timeout, so replaying
it in real time would show few devices and almost no session ending within a run. Stamping each
message with the moment it happens to be sent would keep the order but change every gap, and
with it which sessions time out. So live mode keeps each device's own timeline and only moves
where it starts:

1. Time warp (`TimeWarp`): a device's gaps are scaled by configured session timeout / 60 s, and
   the `session_timeout_s` some SDKs send is scaled alike, so a gap within (past) the timeout in
   the workload is within (past) the timeout the worker applies, exactly, in integer ms. A gap
   longer than the idle timeout + 1 s is cut to that: past it, any gap closes a session the same
   way. With the default config (60 s) the warp is 1, real time. When the configured idle timeout
   is not 30 x the session timeout (as in the demo), a long foreground pause may end in `idle`
   where the workload meant a quiet read or a crash followed by a force quit.
2. Device starts (`plan_live`): devices start one after another, in the generator's order, a
   stagger apart; the stagger is solved so that the events due within the duration come to
   about rate x duration. When the devices are too few for the rate, they all start within the
   first second and the closing summary shows the rate they gave.
3. Sending: a message is sent when the wall clock reaches its newest event's warped time (a
   message without a readable event goes with its device's previous one), and its event times
   are rewritten to run start + warped time, so event time = send time. Timestamps that are bad
   on purpose (before 2000, or not a number) are left alone, so they are still dead-lettered; a
   retried event keeps its first (warped) time, as an SDK retry does.

The workload is generated up front (about 45 messages per device held in memory); for millions
of devices write a file with `sessionize generate` and send it with `produce --input`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO, TypeGuard, TypeVar

import orjson

from pipeline.cli.main import (
    EXIT_KAFKA,
    CliError,
    _open_input,
    add_bootstrap_flag,
    add_config_flag,
    command,
    config_from,
)
from pipeline.config import Config
from pipeline.engine import SessionConfig
from pipeline.vocabulary import MAX_SESSION_TIMEOUT_S, MIN_SESSION_TIMEOUT_S, MIN_TS_MS, wall_ms
from pipeline.workload.generator import DEFAULT_TIMEOUT_MS, WorkloadSpec, generate_keyed_messages

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer, ConsumerRecord

DEFAULT_TIMEOUT_S = 15.0
DEFAULT_RATE = 100.0
DEFAULT_DURATION_S = 10.0
_T = TypeVar("_T")


# Shared by the commands


def add_timeout_flag(parser: argparse.ArgumentParser) -> None:
    """--timeout: how long to wait for unreachable brokers."""
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"give up on brokers silent for S seconds (default {DEFAULT_TIMEOUT_S:g})",
    )


def add_topic_flag(parser: argparse._ActionsContainer, default_help: str) -> None:
    """--topic, with what it defaults to."""
    parser.add_argument("--topic", metavar="NAME", help=f"Kafka topic (default: {default_help})")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def run_kafka(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that talks to Kafka, with aiokafka's own log lines kept off stderr."""
    # aiokafka logs connection errors itself; with logging unconfigured Python would print
    # them next to our one-line error. Failures reach the user through exceptions instead.
    from pipeline.kafka.topics import quiet_client_log

    with quiet_client_log():
        return asyncio.run(coroutine)


def unreachable(
    config: Config, elapsed_s: float, timed_out: bool, logged: Sequence[BaseException] = ()
) -> CliError:
    """The error for brokers that did not answer, or refused (SASL, TLS) as `logged` shows."""
    from pipeline.kafka.topics import refusal

    why = "no answer" if timed_out else "no broker answered"
    return CliError(
        refusal(config, logged)
        or f"cannot reach Kafka at {config.kafka.bootstrap}: {why} after {elapsed_s:.1f} s",
        EXIT_KAFKA,
    )


async def start_client(client: Any, config: Config, timeout_s: float) -> None:
    """Start an aiokafka producer or consumer; CliError (exit 3) if no broker answers."""
    from aiokafka.errors import KafkaError

    from pipeline.kafka.topics import quiet_client_log

    started = time.monotonic()
    with quiet_client_log() as client_log:
        try:
            await asyncio.wait_for(client.start(), timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await client.stop()
            raise unreachable(
                config, time.monotonic() - started, isinstance(exc, TimeoutError), client_log.errors
            ) from None


def unknown_topic(topic: str, config: Config) -> CliError:
    """The error for a topic the brokers do not have."""
    return CliError(
        f"topic '{topic}' does not exist on {config.kafka.bootstrap} "
        "(`sessionize topics create` creates the pipeline's topics)",
        EXIT_KAFKA,
    )


class Progress:
    """A one-line progress display, redrawn with '\\r'; silent unless the stream is a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self.drawn_at = 0.0

    def update(self, fraction: float | None, messages: int, events: int) -> None:
        """Redraw, at most five times a second."""
        now = time.monotonic()
        if not self.enabled or now - self.drawn_at < 0.2:
            return
        self.drawn_at = now
        rate = events / max(now - self.started, 1e-6)
        bar = ""
        if fraction is not None:
            filled = round(min(max(fraction, 0.0), 1.0) * 30)
            bar = f" [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}"
        self.stream.write(f"\r{self.label}{bar}  {messages} sent  {rate:.0f} events/s\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """Clear the line."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# produce


@dataclass(slots=True)
class ProduceStats:
    """What a produce run sent, and what the brokers confirmed or refused."""

    topic: str
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    events: int = 0
    started_ms: int = 0  # wall clock, epoch ms
    elapsed_s: float = 0.0
    first_error: str | None = None

    def summary_line(self) -> str:
        """One line for a person: sent, failed, events/s."""
        rate = self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0
        line = (
            f"sent {self.delivered} messages ({self.events} events) to {self.topic} "
            f"in {self.elapsed_s:.1f} s: {self.failed} failed, {rate:.0f} events/s"
        )
        return f"{line} (first error: {self.first_error})" if self.first_error else line


class Sender:
    """An aiokafka producer for one topic that counts deliveries and failures."""

    def __init__(self, producer: AIOKafkaProducer, stats: ProduceStats) -> None:
        self.producer = producer
        self.stats = stats

    async def send(self, key: bytes | None, value: bytes, events: int) -> None:
        """Queue one message (batched by the producer's linger); delivery is counted later."""
        from aiokafka.errors import KafkaError

        stats = self.stats
        stats.queued += 1
        stats.events += events
        try:
            delivery = await self.producer.send(stats.topic, value, key=key)
        except KafkaError as exc:
            self._failed(exc)
            return
        delivery.add_done_callback(self._delivered)

    def _delivered(self, delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled():
            self._failed(None)
        elif (error := delivery.exception()) is not None:
            self._failed(error)
        else:
            self.stats.delivered += 1

    def _failed(self, error: BaseException | None) -> None:
        self.stats.failed += 1
        if self.stats.first_error is None and error is not None:
            self.stats.first_error = f"{type(error).__name__}: {error}"


@contextlib.asynccontextmanager
async def open_sender(config: Config, topic: str, timeout_s: float) -> AsyncIterator[Sender]:
    """A started Sender for an existing `topic`; flushes and stops the producer on the way out."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        acks="all", linger_ms=20, max_batch_size=256 * 1024, **config.kafka.client_options()
    )
    await start_client(producer, config, timeout_s)
    stats = ProduceStats(topic, started_ms=wall_ms())
    started = time.monotonic()
    try:
        cluster = await producer.client.fetch_all_metadata()
        if topic not in cluster.topics():
            raise unknown_topic(topic, config)
        yield Sender(producer, stats)
        await producer.flush()
    finally:
        stats.elapsed_s = time.monotonic() - started
        await producer.stop()


def device_key(message: bytes) -> tuple[bytes | None, int]:
    """The Kafka key of a message (its device_id, if it is JSON with one) and its event count."""
    try:
        parsed = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None, 1
    if not isinstance(parsed, dict):
        return None, 1
    device_id = parsed.get("device_id")
    key = device_id.encode() if isinstance(device_id, str) else None
    events = parsed.get("events")
    return key, len(events) if isinstance(events, list) else 1


async def produce_lines(
    config: Config, topic: str, source: IO[bytes], total_bytes: int | None, timeout_s: float
) -> ProduceStats:
    """Send each non-empty line of `source` as one message, as fast as the producer batches."""
    progress = Progress(f"producing to {topic}")
    async with open_sender(config, topic, timeout_s) as sender:
        read = 0
        for line in source:
            read += len(line)
            message = line.rstrip(b"\r\n")
            if not message:
                continue
            key, events = device_key(message)
            await sender.send(key, message, events)
            stats = sender.stats
            progress.update(read / total_bytes if total_bytes else None, stats.queued, stats.events)
        progress.close()
    return sender.stats


@dataclass(frozen=True, slots=True)
class TimeWarp:
    """Maps the workload's gaps onto the wall clock of a live run (see the module docstring)."""

    session_timeout_ms: int  # what the workload's 60 s timeout becomes
    max_gap_ms: int  # longer gaps are cut to this

    @classmethod
    def for_sessions(cls, sessions: SessionConfig) -> TimeWarp:
        """The warp for the pipeline's configured timeouts."""
        timeout_ms = round(sessions.session_timeout_s * 1000)
        idle_ms = round(sessions.idle_timeout_s * 1000)
        return cls(timeout_ms, max(timeout_ms, idle_ms) + 1000)

    def gap(self, workload_gap_ms: int) -> int:
        """A device's gap in wall ms; within the timeout if and only if it was in the workload."""
        scaled = workload_gap_ms * self.session_timeout_ms // DEFAULT_TIMEOUT_MS
        return min(scaled, self.max_gap_ms)

    def timeout_s(self, workload_timeout_s: float) -> float:
        """An SDK's `session_timeout_s`, scaled like the gaps (at least 1 s, the spec's minimum)."""
        return max(1.0, workload_timeout_s * self.session_timeout_ms / DEFAULT_TIMEOUT_MS)


class DeviceClock:
    """One device in a live run: when it starts, and each of its event times, warped."""

    __slots__ = ("offsets", "start_ms")

    def __init__(self, event_times: Iterable[int], warp: TimeWarp) -> None:
        times = sorted(set(event_times))
        self.offsets: dict[int, int] = {}
        offset = 0
        for previous, current in itertools.pairwise([*times[:1], *times]):
            offset += warp.gap(current - previous)
            self.offsets[current] = offset
        self.start_ms = 0

    def offset(self, ts: int) -> int:
        """Wall ms after the run starts at which event time `ts` of this device happens."""
        return self.start_ms + self.offsets[ts]


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """A generated message with its place in a live run."""

    send_ms: int  # ms after the run starts
    key: bytes | None
    value: bytes  # as generated; `LivePlan.stamp` gives the bytes to send
    events: int
    clock: DeviceClock | None


@dataclass(slots=True)
class LivePlan:
    """The messages of a live run, in send order, and how they were spread."""

    messages: list[LiveMessage]
    warp: TimeWarp
    duration_ms: int
    devices: int  # devices that send within the run
    best_rate: float  # events/s these devices give at most (all starting at once)

    def stamp(self, message: LiveMessage, run_start_ms: int) -> bytes:
        """The message to send: its event times moved to the run's wall clock."""
        if message.clock is None:
            return message.value
        parsed = _loads(message.value)
        bodies = _event_bodies(parsed)
        if not bodies:
            return message.value
        for body in bodies:
            ts = body.get("ts")
            if _is_event_time(ts):
                body["ts"] = run_start_ms + message.clock.offset(ts)
            timeout = body.get("session_timeout_s")
            if _is_timeout(timeout):
                body["session_timeout_s"] = self.warp.timeout_s(timeout)
        return orjson.dumps(parsed)


def _loads(message: bytes) -> Any:
    try:
        return orjson.loads(message)
    except orjson.JSONDecodeError:
        return None


def _event_bodies(parsed: Any) -> list[dict[str, Any]]:
    if not isinstance(parsed, dict):
        return []
    events = parsed.get("events")
    if isinstance(events, list):
        return [event for event in events if isinstance(event, dict)]
    return [parsed]


def _is_timeout(value: Any) -> TypeGuard[float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and MIN_SESSION_TIMEOUT_S <= value <= MAX_SESSION_TIMEOUT_S
    )


def _is_event_time(ts: Any) -> TypeGuard[int]:
    return isinstance(ts, int) and not isinstance(ts, bool) and ts >= MIN_TS_MS


@dataclass(slots=True)
class _Generated:
    device: int  # -1: before any device (a bad message of nobody)
    key: bytes | None
    value: bytes
    events: int
    newest_ts: int | None


def plan_live(spec: WorkloadSpec, warp: TimeWarp, rate: float, duration_s: float) -> LivePlan:
    """Spread the workload's devices over a live run of `duration_s` at about `rate` events/s."""
    generated: list[_Generated] = []
    device_of: dict[bytes, int] = {}
    event_times: list[list[int]] = []
    device = -1
    for key, value in generate_keyed_messages(spec):
        bodies = _event_bodies(_loads(value))
        times = [body["ts"] for body in bodies if _is_event_time(body.get("ts"))]
        if key is not None:  # a keyless message is garbage inside the previous device's upload
            device = device_of.setdefault(key, len(device_of))
            if device == len(event_times):
                event_times.append([])
        if device >= 0:
            event_times[device].extend(times)
        generated.append(
            _Generated(device, key, value, max(len(bodies), 1), max(times, default=None))
        )
    clocks = [DeviceClock(times, warp) for times in event_times]

    # Each message's offset from its device's start: never going back, so the order is kept.
    schedules: list[list[tuple[int, int]]] = [[] for _ in clocks]
    offsets: list[int] = []
    for message in generated:
        if message.device < 0:
            offsets.append(0)
            continue
        schedule = schedules[message.device]
        previous = schedule[-1][0] if schedule else 0
        clock = clocks[message.device]
        own = clock.offsets[message.newest_ts] if message.newest_ts else previous
        schedule.append((max(previous, own), message.events))
        offsets.append(schedule[-1][0])

    duration_ms = round(duration_s * 1000)
    starts = _device_starts(schedules, rate, duration_ms)
    planned: list[tuple[int, int, LiveMessage]] = []
    for order, (message, offset) in enumerate(zip(generated, offsets, strict=True)):
        start = starts[message.device] if message.device >= 0 else 0
        if start is None or start + offset >= duration_ms:
            continue
        sender = clocks[message.device] if message.device >= 0 else None
        if sender is not None:
            sender.start_ms = start
        live = LiveMessage(start + offset, message.key, message.value, message.events, sender)
        planned.append((start + offset, order, live))
    planned.sort(key=lambda item: (item[0], item[1]))
    all_at_once = sum(
        events for schedule in schedules for offset, events in schedule if offset < duration_ms
    )
    return LivePlan(
        messages=[item[2] for item in planned],
        warp=warp,
        duration_ms=duration_ms,
        devices=sum(start is not None for start in starts),
        best_rate=all_at_once * 1000 / duration_ms if duration_ms else 0.0,
    )


_BUDGET_BINS = 240  # the rate is kept per 1/240 of the run (1/8 s for 30 s) ...
_MIN_BIN_MS = 125  # ... or per 1/8 s, whichever is longer


def _device_starts(
    schedules: Sequence[Sequence[tuple[int, int]]], rate: float, duration_ms: int
) -> list[int | None]:
    """When each device starts (None: not within the run).

    Devices start in order, each as early as it can, at most one per 1/rate s, provided the
    events due by the end of every bin (1/240 of the run) stay within rate x the time elapsed.
    So many devices launch in the first seconds, then new ones arrive as the early ones quieten
    down, and the rate stays about flat.
    """
    bin_ms = max(_MIN_BIN_MS, -(-duration_ms // _BUDGET_BINS))
    bins = max(1, -(-duration_ms // bin_ms))
    budget = [rate * (index + 1) * bin_ms / 1000 for index in range(bins)]
    due = [0] * bins  # events due by the end of each bin, cumulative
    spacing = 1000 / rate
    retry_step = max(spacing, bin_ms / 4)
    starts: list[int | None] = [None] * len(schedules)
    start = 0.0
    for device, schedule in enumerate(schedules):
        while start < duration_ms:
            added = _due_by_bin(schedule, round(start), duration_ms, bin_ms, bins)
            if all(
                before + more <= limit
                for before, more, limit in zip(due, added, budget, strict=True)
            ):
                break
            start += retry_step
        else:
            break  # the run is full: the remaining devices do not start
        starts[device] = round(start)
        due = [before + more for before, more in zip(due, added, strict=True)]
        start += spacing
    return starts


def _due_by_bin(
    schedule: Sequence[tuple[int, int]], start: int, duration_ms: int, bin_ms: int, bins: int
) -> list[int]:
    """Cumulative events of one device due by the end of each bin, if it starts at `start`."""
    counts = [0] * bins
    for offset, events in schedule:
        at = start + offset
        if at >= duration_ms:
            break
        counts[at // bin_ms] += events
    return list(itertools.accumulate(counts))


async def produce_live(
    config: Config, topic: str, plan: LivePlan, timeout_s: float, label: str | None = None
) -> ProduceStats:
    """Send the plan's messages on time, stamped with the wall clock."""
    loop = asyncio.get_running_loop()
    progress = Progress(label or f"producing to {topic}")
    async with open_sender(config, topic, timeout_s) as sender:
        run_start_ms = wall_ms()
        started = loop.time()
        for message in plan.messages:
            wait = message.send_ms / 1000 - (loop.time() - started)
            if wait > 0.001:
                await asyncio.sleep(wait)
            await sender.send(message.key, plan.stamp(message, run_start_ms), message.events)
            stats = sender.stats
            progress.update(
                (loop.time() - started) * 1000 / plan.duration_ms, stats.queued, stats.events
            )
        wait = plan.duration_ms / 1000 - (loop.time() - started)
        if wait > 0:  # the run lasts its duration even when its last message is due earlier
            await asyncio.sleep(wait)
        progress.close()
    return sender.stats


def _produce_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input",
        metavar="FILE",
        help="JSONL of events or batches, one message per line ('-': stdin); "
        "key: the line's device_id",
    )
    source.add_argument(
        "--devices",
        type=_positive_int,
        metavar="N",
        help="instead of a file, generate live traffic of N simulated devices",
    )
    live = parser.add_argument_group("generated traffic (with --devices)")
    live.add_argument(
        "--rate",
        type=_positive_float,
        metavar="EVENTS_PER_S",
        help=f"about this many events per second (default {DEFAULT_RATE:g})",
    )
    live.add_argument(
        "--duration",
        type=_positive_float,
        metavar="S",
        help=f"seconds to run (default {DEFAULT_DURATION_S:g})",
    )
    live.add_argument("--seed", type=int, metavar="K", help="random seed (default 0)")
    live.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="B",
        help="events per SDK upload (default 1: single events)",
    )
    add_topic_flag(parser, "the configured input topic")
    add_config_flag(parser)
    add_bootstrap_flag(parser)
    add_timeout_flag(parser)


@command(
    "produce",
    "send events to Kafka, from a JSONL file or generated live",
    "Send raw events or batches to the input topic, keyed by device id. From a JSONL file "
    "(--input, '-' for stdin), as fast as the producer batches them; or generated live "
    "(--devices N --rate EVENTS_PER_S --duration S --seed K [--batch-size B]): simulated "
    "devices launch, use, background, resume, terminate and crash with their event times on "
    "the wall clock, gaps scaled so that sessions time out under the configured "
    "session_timeout_s as the generator intended. Shows progress on a terminal and ends with "
    "one summary line (sent, failed, events/s). Exits 3 when a message could not be sent.",
)(_produce_flags)
def _produce(args: argparse.Namespace) -> int:
    config = config_from(args)
    topic = args.topic or config.topics.input
    live_flags = {"--rate": args.rate, "--duration": args.duration, "--seed": args.seed}
    live_flags["--batch-size"] = args.batch_size
    if args.input is not None:
        given = [name for name, value in live_flags.items() if value is not None]
        if given:
            raise CliError(f"{', '.join(given)} go with --devices, not with --input")
        with _open_input(args.input) as source:
            stats = run_kafka(produce_lines(config, topic, source, _size_of(source), args.timeout))
    elif args.devices is not None:
        rate = args.rate if args.rate is not None else DEFAULT_RATE
        duration = args.duration if args.duration is not None else DEFAULT_DURATION_S
        spec = WorkloadSpec(
            devices=args.devices,
            seed=args.seed or 0,
            batch_size=args.batch_size or 1,
            start_ms=wall_ms(),
        )
        plan = plan_live(spec, TimeWarp.for_sessions(config.sessions), rate, duration)
        stats = run_kafka(produce_live(config, topic, plan, args.timeout))
        if plan.best_rate < 0.9 * rate:
            note = f"{args.devices} devices give about {plan.best_rate:.0f} events/s"
            print(f"note: {note}; more --devices would reach {rate:g}", file=sys.stderr)
    else:
        raise CliError("nothing to send: give --input FILE ('-': stdin) or --devices N")
    print(stats.summary_line(), file=sys.stderr)
    return EXIT_KAFKA if stats.failed else 0


def _size_of(source: IO[bytes]) -> int | None:
    try:
        size = os.fstat(source.fileno()).st_size
    except (OSError, ValueError):
        return None
    return size or None


# consume


async def read_topics(
    config: Config,
    topics: Sequence[str],
    on_record: Callable[[ConsumerRecord], None],
    *,
    from_beginning: bool = True,
    follow: bool = False,
    limit: int | None = None,
    group: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    until: Callable[[], bool] | None = None,
) -> int:
    """Read `topics` (read_committed) and hand each record to `on_record`; returns the count.

    Without `follow`, stops once caught up with the end offsets seen at the start; with it,
    at `limit` records, when `until()` is true, or never. With `group`, reads as that consumer
    group: starts at its committed offsets and commits what was handed over.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
        client_id="sessionize-consume",
        **config.kafka.client_options(),
    )
    await start_client(consumer, config, timeout_s)
    count = 0
    try:
        existing = await consumer.topics()
        for topic in topics:
            if topic not in existing:
                raise unknown_topic(topic, config)
        consumer.subscribe(topics=list(topics))
        deadline = time.monotonic() + timeout_s
        ends: dict[TopicPartition, int] | None = None
        while limit is None or count < limit:
            if ends is None and consumer.assignment():
                ends = await consumer.end_offsets(sorted(consumer.assignment()))
            if ends is None and time.monotonic() > deadline:
                raise CliError(f"no partitions of {', '.join(topics)} were assigned", EXIT_KAFKA)
            if ends is not None and not follow and await _caught_up(consumer, ends):
                break
            if until is not None and until():
                break
            left = None if limit is None else limit - count
            batches = await consumer.getmany(timeout_ms=200, max_records=left)
            committed: dict[TopicPartition, int] = {}
            for partition, records in batches.items():
                for record in records:
                    on_record(record)
                    count += 1
                    committed[partition] = record.offset + 1
            if group is not None and committed:
                await consumer.commit(committed)
    finally:
        await consumer.stop()
    return count


async def _caught_up(consumer: Any, ends: dict[Any, int]) -> bool:
    for partition, end in ends.items():
        if await consumer.position(partition) < end:
            return False
    return True


def _consume_flags(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    add_topic_flag(which, "the configured sessions topic")
    which.add_argument(
        "--partner", metavar="NAME", help="read the topic of this configured partner"
    )
    parser.add_argument(
        "--pretty",
        action="store_true",
        help="indented JSON with topic, partition, offset and key (default: one value per line)",
    )
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest message (default: only messages newer than the start)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep reading new messages (default: stop once caught up with the start's end)",
    )
    parser.add_argument("--max", type=_positive_int, metavar="N", help="stop after N messages")
    parser.add_argument(
        "--group",
        metavar="ID",
        help="read as this consumer group: resume at and commit its offsets (default: no group)",
    )
    add_config_flag(parser)
    add_bootstrap_flag(parser)
    add_timeout_flag(parser)


@command(
    "consume",
    "print the messages of an output topic",
    "Print the messages of a topic (--topic; default the sessions topic) or of a configured "
    "partner's topic (--partner NAME) to stdout: one JSON value per line, or --pretty. "
    "Reads committed messages only. Without --follow it stops once caught up with the end "
    "offsets seen at the start; --from-beginning starts at the oldest message (with --group: "
    "only where the group has no committed offset). Exits 3 for an unknown topic.",
)(_consume_flags)
def _consume(args: argparse.Namespace) -> int:
    config = config_from(args)
    topic = args.topic or config.topics.sessions
    if args.partner is not None:
        topic = partner_topic(config, args.partner)
    output = RecordWriter(sys.stdout.buffer, args.pretty)
    count = run_kafka(
        read_topics(
            config,
            [topic],
            output.write,
            from_beginning=args.from_beginning,
            follow=args.follow,
            limit=args.max,
            group=args.group,
            timeout_s=args.timeout,
            until=lambda: output.closed,
        )
    )
    hint = ""
    if count == 0 and not (args.from_beginning or args.follow or args.group):
        hint = " (only messages newer than the start are read: add --from-beginning or --follow)"
    noun = "message" if count == 1 else "messages"
    print(f"read {count} {noun} from {topic}{hint}", file=sys.stderr)
    return 0


def partner_topic(config: Config, name: str) -> str:
    """The topic of the configured partner `name`; CliError listing the known ones."""
    for partner in config.partners:
        if partner.name == name:
            return partner.topic
    known = ", ".join(sorted(p.name for p in config.partners)) or "none configured"
    raise CliError(f"unknown partner '{name}' (known: {known})")


@dataclass(slots=True)
class RecordWriter:
    """Writes consumed records to a byte stream: the value per line, or pretty JSON."""

    stream: IO[bytes]
    pretty: bool
    closed: bool = False  # the reader went away (broken pipe)

    def write(self, record: ConsumerRecord) -> None:
        if self.closed:
            return
        value: bytes = record.value if record.value is not None else b"null"
        if self.pretty:
            document = {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "key": _text(record.key),
                "value": _json_or_text(value),
            }
            line = orjson.dumps(document, option=orjson.OPT_INDENT_2)
        else:
            line = value
        try:
            self.stream.write(line + b"\n")
            self.stream.flush()
        except BrokenPipeError:
            self.closed = True
            # Python would complain again when flushing stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _json_or_text(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _text(raw)


# topics


def _topics_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["create", "list", "describe"],
        help="create: make the missing topics; list: which exist; "
        "describe: partitions and replication",
    )
    add_config_flag(parser)
    add_bootstrap_flag(parser)
    add_timeout_flag(parser)


@command(
    "topics",
    "create, list or describe the pipeline's topics",
    "The pipeline's topics are the input, sessions, enriched and dead-letter topics and one "
    "topic per configured partner, named in the config file. `create` makes the missing ones "
    "with the configured partitions and replication; `list` shows whether each exists; "
    "`describe` shows partitions and replication. Faust's own changelog and repartition topics "
    "are the worker's business.",
)(_topics_flags)
def _topics(args: argparse.Namespace) -> int:
    from pipeline.kafka.topics import describe, ensure_topics

    config = config_from(args)
    created: list[str] = []
    if args.action == "create":
        created = run_kafka(admin_call(config, args.timeout, ensure_topics))
    infos = run_kafka(admin_call(config, args.timeout, describe))
    missing = [info.name for info in infos if info.partitions is None]
    header = ["TOPIC", "ROLE", "STATUS"]
    if args.action != "list":
        header += ["PARTITIONS", "REPLICATION"]
    rows = [header]
    for info in infos:
        status = "created" if info.name in created else "exists" if info.partitions else "missing"
        row = [info.name, info.role, status]
        if args.action != "list":
            row += [_or_dash(info.partitions), _or_dash(info.replication)]
        rows.append(row)
    print(_table(rows))
    if args.action == "create" and missing:
        raise CliError(
            f"Kafka at {config.kafka.bootstrap} did not create: {', '.join(missing)}", EXIT_KAFKA
        )
    return 0


async def admin_call(
    config: Config, timeout_s: float, call: Callable[[Config], Coroutine[Any, Any, _T]]
) -> _T:
    """Run one of `pipeline.kafka.topics`' calls; CliError (exit 3) when Kafka is unreachable."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    from pipeline.kafka.topics import KafkaUnavailable, quiet_client_log

    # A bootstrap of our own first: it tells an unreachable broker within --timeout, and how
    # long it took; pipeline.kafka.topics waits longer and reports its whole timeout.
    probe = AIOKafkaClient(**config.kafka.client_options())
    started = time.monotonic()
    with quiet_client_log() as client_log:
        try:
            await asyncio.wait_for(probe.bootstrap(), timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise unreachable(
                config, time.monotonic() - started, isinstance(exc, TimeoutError), client_log.errors
            ) from None
        finally:
            await probe.close()
    try:
        return await asyncio.wait_for(call(config), timeout_s)
    except KafkaUnavailable as exc:
        raise CliError(str(exc), EXIT_KAFKA) from None
    except TimeoutError:
        raise unreachable(config, timeout_s, True) from None


def _or_dash(number: int | None) -> str:
    return "-" if number is None else str(number)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


# demo


def _demo_flags(parser: argparse.ArgumentParser) -> None:
    from pipeline.tools.demo import DemoOptions

    defaults = DemoOptions()
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=defaults.output_dir,
        metavar="DIR",
        help=f"for the config, logs, outputs, summary and picture (default {defaults.output_dir})",
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=defaults.duration_s,
        metavar="S",
        help=f"seconds of live traffic (default {defaults.duration_s:g})",
    )
    parser.add_argument(
        "--devices",
        type=_positive_int,
        default=defaults.devices,
        metavar="N",
        help=f"simulated devices (default {defaults.devices})",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=defaults.rate,
        metavar="EVENTS_PER_S",
        help=f"about this many events per second (default {defaults.rate:g})",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})"
    )
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="use this Kafka instead of starting a local broker (env: KAFKA_BOOTSTRAP)",
    )
    add_timeout_flag(parser)


@command(
    "demo",
    "run the whole pipeline on a real broker and show what it made",
    "Start a local Kafka broker (or use --bootstrap / KAFKA_BOOTSTRAP), create the topics, "
    "start a worker with short timeouts (session_timeout_s 5, idle_timeout_s 15, grace 1 s; "
    "the config is written to DIR/demo.toml; SESSIONIZE_* settings do not apply), send live "
    "generated traffic for --duration seconds, wait for the last "
    "sessions to close, read every output topic, and print a summary (also DIR/summary.txt). "
    "Draws DIR/timeline.html: the sessions and lifecycle events of a few devices. Stops the "
    "worker and the broker it started, also on Ctrl-C or error.",
)(_demo_flags)
def _demo(args: argparse.Namespace) -> int:
    from pipeline.tools.demo import DemoOptions, run_demo

    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP") or None
    options = DemoOptions(
        output_dir=args.output_dir,
        duration_s=args.duration,
        devices=args.devices,
        rate=args.rate,
        seed=args.seed,
        bootstrap=bootstrap,
        timeout_s=args.timeout,
    )
    print(run_demo(options))
    return 0
