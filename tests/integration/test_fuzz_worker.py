"""Fuzzed messages through the streaming worker on the real broker (SPEC section 2: "No
message can stop the pipeline").

3,000 messages from tests/fuzz_strategies.py (one fixed seed: the same messages every run),
keyed by the device they were built for, on 3 partitions, with all five partner formats, a
small `max_event_bytes` (4 KiB) and the smallest dead-letter payload cap (1 KiB). Then a clean
restart and 300 more, so that nothing the first worker stored (device states, the changelog)
can make the next one fail.

Offline mode over the same messages is first checked by the oracle of fuzz_strategies (every
line accounted for); the worker must then be alive, and its topics must hold what offline mode
wrote: the same dead letters (origin topic/partition/offset mapped back to the line, index,
reason, payload and its cut), the same enriched events and sessions per device. A device named
by messages of different keys (a mutated device id, an unkeyed message) has no defined order
across partitions, so for those devices only the enriched event ids are compared. Every
record on every output topic is strict JSON, matches its schema and is at most
`Limits.max_record_bytes`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.config import Config, load_config
from tests import fuzz_strategies as fz
from tests.integration.harness import Pipeline, consume, read_jsonl
from tests.schema_check import canonical_schema, check_record

pytestmark = pytest.mark.kafka

SEED = 20_260_901
MESSAGES = 3_000
MORE_AFTER_RESTART = 300
MAX_EVENT_BYTES = 4_096
PAYLOAD_CAP = 1_024  # the smallest the config accepts
FAST = {"session_timeout_s": 3, "idle_timeout_s": 6}
PARTNERS = [
    {"name": "canonical", "format": "canonical"},
    {"name": "amplitude", "format": "amplitude"},
    {"name": "ga4", "format": "ga4"},
    {"name": "mixpanel", "format": "mixpanel"},
    {"name": "braze", "format": "braze"},
]
ROLES = ("sessions", "enriched", "deadletter")
FILES = {"sessions": "sessions", "enriched": "enriched", "deadletter": "dead_letter"}

Record = dict[str, Any]
Key = tuple[str, str]


async def produce_recorded(
    bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]
) -> list[tuple[int, int]]:
    """Send in order; return each message's (partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4_000_000
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in sent]


def oracle_limits(config: Config, now_ms: int) -> fz.Limits:
    return fz.Limits(
        max_event_bytes=config.limits.max_event_bytes,
        max_depth=config.limits.max_depth,
        max_dead_letter_payload_bytes=config.limits.max_dead_letter_payload_bytes,
        max_future_skew_ms=config.limits.max_future_skew_ms,
        now_ms=now_ms,
        now_slack_ms=120_000,  # the worker's clock runs while it reads
    )


def device_orders(lines: list[fz.Line], limits: fz.Limits) -> dict[Key, set[Any]]:
    """For each device key named by an event, the Kafka keys of the messages naming it."""
    keys: dict[Key, set[Any]] = defaultdict(set)
    for number, line in enumerate(lines, start=1):
        for _, event, _ in fz.read_line(number, line.data, limits).events:
            if (device := named_device(event)) is not None:
                keys[device].add(line.key if line.key is not None else ("unkeyed", number))
    return keys


def named_device(event: Any) -> Key | None:
    """The device key an event names, when it names one at all."""
    if type(event) is not dict:
        return None
    app_id, device_id = event.get("app_id"), event.get("device_id")
    return (app_id, device_id) if type(app_id) is str and type(device_id) is str else None


def _first_difference(stream: list[Record], offline: list[Record]) -> str:
    for index in range(max(len(stream), len(offline))):
        a = stream[index] if index < len(stream) else None
        b = offline[index] if index < len(offline) else None
        if a != b:
            return f"  [{index}] stream : {a}\n  [{index}] offline: {b}"
    return "  (same)"


def _device(record: Record) -> Key:
    return record["app_id"], record["device_id"]


def _dead_shape(record: Record, line: int) -> tuple[Any, ...]:
    fields = ("index", "reason", "payload", "payload_encoding", "payload_truncated")
    return (line, *(record.get(f) for f in fields), record.get("payload_sha256"))


def _read_offline(directory: Path, pipeline: Pipeline) -> dict[str, Any]:
    outputs: dict[str, Any] = {r: read_jsonl(directory / f"{FILES[r]}.jsonl") for r in ROLES}
    outputs["summary"] = orjson.loads((directory / "summary.json").read_bytes())
    outputs["partners"] = {
        p["name"]: read_jsonl(directory / "partners" / f"{p['name']}.jsonl") for p in PARTNERS
    }
    return outputs


def _schema_of(role: str) -> Callable[[Record], str]:
    if role == "sessions":
        return canonical_schema
    if role == "enriched":
        return lambda _: "enriched_event"
    if role == "deadletter":
        return lambda _: "dead_letter"
    partner_schema = f"partners/{role.removeprefix('partner.')}"
    return lambda _: partner_schema


class Stream:
    """The worker's output topics, read from the beginning (read_committed)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.topics = {role: pipeline.topic(role) for role in ROLES}
        self.topics |= {
            f"partner.{p['name']}": pipeline.topic(f"partner.{p['name']}") for p in PARTNERS
        }

    def read(self, expected: dict[str, int], timeout_s: float) -> dict[str, list[bytes]]:
        """Until every topic holds `expected` records and every session ended, then 2 s more."""
        settled: list[float] = []
        names = {topic: role for role, topic in self.topics.items()}

        def done(records: dict[str, list[bytes]]) -> bool:
            if not settled:
                by_role = {names[t]: v for t, v in records.items()}
                if any(len(by_role[role]) < n for role, n in expected.items()):
                    return False
                sessions = [orjson.loads(v) for v in by_role["sessions"]]
                starts = {r["session_id"] for r in sessions if r["type"] == "session_start"}
                ends = {r["session_id"] for r in sessions if r["type"] == "session_end"}
                if starts != ends:
                    return False
                settled.append(time.monotonic() + 2.0)
            return time.monotonic() >= settled[0]

        records = asyncio.run(
            consume(self.pipeline.bootstrap, list(self.topics.values()), done, timeout_s)
        )
        return {names[topic]: values for topic, values in records.items()}

    def read_until_quiet(self, quiet_s: float, timeout_s: float) -> dict[str, list[bytes]]:
        """Until no record has come for `quiet_s` (or the timeout)."""
        last: list[Any] = [0, time.monotonic()]

        def quiet(records: dict[str, list[bytes]]) -> bool:
            count = sum(map(len, records.values()))
            if count != last[0]:
                last[:] = [count, time.monotonic()]
            return time.monotonic() - last[1] >= quiet_s

        names = {topic: role for role, topic in self.topics.items()}
        records = asyncio.run(
            consume(self.pipeline.bootstrap, list(self.topics.values()), quiet, timeout_s)
        )
        return {names[topic]: values for topic, values in records.items()}


def _decode_and_check(raw: dict[str, list[bytes]], largest: int) -> dict[str, list[Record]]:
    decoded: dict[str, list[Record]] = {}
    for role, values in raw.items():
        schema_of = _schema_of(role)
        records = []
        for value in values:
            assert len(value) <= largest, f"{role}: a {len(value)}-byte record, over {largest}"
            record = orjson.loads(value)  # strict JSON
            check_record(record, schema_of(record))
            records.append(record)
        decoded[role] = records
    return decoded


def assert_accounted_like_offline(
    pipeline: Pipeline,
    lines: list[fz.Line],
    origins: list[tuple[int, int]],
    stream: dict[str, list[Record]],
    offline: dict[str, Any],
    limits: fz.Limits,
) -> None:
    # Offline mode accounts for every line (fuzz_strategies' oracle)...
    fz.account_for(
        lines,
        offline["enriched"],
        offline["deadletter"],
        offline["summary"],
        limits,
        lambda r: r["line"],
    )
    # ...and the worker wrote the same: first the dead letters, by origin.
    line_of = {origin: number for number, origin in enumerate(origins, start=1)}
    raw_topic = pipeline.topic("raw")
    stream_dead = []
    for record in stream["deadletter"]:
        assert record["topic"] == raw_topic and "line" not in record, record
        origin = (record["partition"], record["offset"])
        assert origin in line_of, f"dead letter from an offset never produced: {record!r:.300}"
        stream_dead.append(_dead_shape(record, line_of[origin]))
    offline_dead = [_dead_shape(r, r["line"]) for r in offline["deadletter"]]
    orders = device_orders(lines, limits)
    unordered = {device for device, keys in orders.items() if len(keys) > 1}
    # State-dependent rejections of a device without a defined order may differ.
    unordered_lines = {
        number
        for number, line in enumerate(lines, start=1)
        for _, event, _ in fz.read_line(number, line.data, limits).events
        if named_device(event) in unordered
    }

    def comparable(shapes: list[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
        return Counter(
            s
            for s in shapes
            if not (s[0] in unordered_lines and s[2] in ("attribute_not_numeric", "invalid_event"))
        )

    missing = comparable(offline_dead) - comparable(stream_dead)
    extra = comparable(stream_dead) - comparable(offline_dead)
    assert not missing and not extra, (
        f"dead letters differ: missing {list(missing)[:3]}, extra {list(extra)[:3]}\n"
        + pipeline.worker_log()[-2000:]
    )
    # Enriched events and sessions, per device.
    for role in ("enriched", "sessions"):
        got: dict[Key, list[Record]] = defaultdict(list)
        want: dict[Key, list[Record]] = defaultdict(list)
        for record in stream[role]:
            got[_device(record)].append(record)
        for record in offline[role]:
            want[_device(record)].append(record)
        for device in got.keys() | want.keys():
            if device in unordered:
                if role == "enriched":
                    ids = Counter(r["event_id"] for r in got[device])
                    assert ids == Counter(r["event_id"] for r in want[device]), device
                continue
            if got[device] != want[device]:
                raise AssertionError(
                    f"{role} of {device} differ from offline mode:\n"
                    + _first_difference(got[device], want[device])
                    + "\n"
                    + pipeline.worker_log()[-2000:]
                )
    if not unordered:
        for partner in PARTNERS:
            name = partner["name"]
            assert len(stream[f"partner.{name}"]) == len(offline["partners"][name]), name


def test_fuzzed_messages_never_stop_the_worker_and_every_one_is_accounted_for(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(
        sessions=FAST,
        input={"max_event_bytes": MAX_EVENT_BYTES, "max_dead_letter_payload_bytes": PAYLOAD_CAP},
        partitions=3,
        partners=PARTNERS,
    )
    config = load_config(pipeline.config_path, env={})
    assert config.limits.max_dead_letter_payload_bytes == PAYLOAD_CAP
    now = time.time_ns() // 1_000_000
    context = fz.FuzzContext(
        now_ms=now,
        t0=now - 2 * 3_600_000,
        max_event_bytes=MAX_EVENT_BYTES,
        max_depth=config.limits.max_depth,
        max_future_skew_ms=config.limits.max_future_skew_ms,
        id_prefix="m",
        exact_now=False,
        max_batch=6,
        event_timeouts=(1, 2, 2.5),
    )
    pick = fz.RandomPick(SEED)
    lines = [fz.fuzz_line(pick, context) for _ in range(MESSAGES)]
    # Large rejected messages (the input topic holds up to about Limits.max_record_bytes):
    # their dead letters are cut at the cap.
    lines += [
        fz.Line(b'{"text": "' + "\u00e9".encode() * 10_000 + b'"}', b"dev-1", "large"),
        fz.Line(b"\xff" * 30_000, None, "large"),
        fz.Line(b'{"q": "' + b'\\"' * 15_000 + b'"}', b"dev-2", "large"),
    ]
    limits = oracle_limits(config, now)
    stream = Stream(pipeline)
    largest = config.limits.max_record_bytes
    started = time.monotonic()

    worker = pipeline.start_worker()
    origins = produce_lines(pipeline, lines)
    check_phase(pipeline, worker, lines, origins, stream, now, limits, largest, started)

    # A clean restart, and more of the same: nothing stored makes the next worker fail.
    pipeline.stop_workers(signal.SIGTERM)
    assert worker.returncode == 0, pipeline.worker_log()
    # Ten minutes after the last event time: offline mode, too, sees the sessions the worker
    # closed live expire. No re-sends of earlier events: one older than the duplicate window
    # would be applied, to a session offline mode still has open.
    later = max(context.clocks.values()) + 600_000
    for device in context.clocks:
        context.clocks[device] = later
    context.sent.clear()
    context.sent_lines.clear()
    more = [fz.fuzz_line(pick, context) for _ in range(MORE_AFTER_RESTART)]
    worker = pipeline.start_worker()
    origins += produce_lines(pipeline, more)
    lines += more
    check_phase(pipeline, worker, lines, origins, stream, now, limits, largest, started)


def messages_of(lines: list[fz.Line]) -> list[tuple[bytes | None, bytes]]:
    return [(line.key, line.data) for line in lines]


def produce_lines(pipeline: Pipeline, lines: list[fz.Line]) -> list[tuple[int, int]]:
    topic = pipeline.topic("raw")
    return asyncio.run(produce_recorded(pipeline.bootstrap, topic, messages_of(lines)))


def check_phase(
    pipeline: Pipeline,
    worker: Any,
    lines: list[fz.Line],
    origins: list[tuple[int, int]],
    stream: Stream,
    now: int,
    limits: fz.Limits,
    largest: int,
    started: float,
) -> None:
    """Everything produced so far is on the output topics as offline mode has it, the worker
    still runs."""
    try:
        offline = _read_offline(pipeline.offline(messages_of(lines), now_ms=now), pipeline)
    except Exception as exc:
        # No reference to compare with: still say whether the worker survived the same input.
        raw = stream.read_until_quiet(quiet_s=10, timeout_s=90)
        counts = {role: len(values) for role, values in raw.items() if role in ROLES}
        alive = worker.poll() is None
        raise AssertionError(
            f"offline mode crashed on the fuzzed input ({type(exc).__name__}: {exc}); the "
            f"worker is {'alive' if alive else f'dead ({worker.returncode})'} with {counts}\n"
            + pipeline.worker_log()[-3000:]
        ) from exc
    expected = {role: len(offline[role]) for role in ROLES}
    raw = stream.read(expected, timeout_s=90)
    elapsed = time.monotonic() - started
    assert worker.poll() is None, (
        f"the worker exited ({worker.returncode})\n{pipeline.worker_log()}"
    )
    got = {role: len(raw[role]) for role in ROLES}
    assert got == expected, f"after {elapsed:.0f} s\n{pipeline.worker_log()[-3000:]}"
    decoded = _decode_and_check(raw, largest)
    assert_accounted_like_offline(pipeline, lines, origins, decoded, offline, limits)
