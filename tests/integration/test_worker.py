"""The streaming worker against a real Apache Kafka broker (SPEC sections 2, 3 and 5).

Each test compares the worker's topics with offline mode on the same input, or checks a rule
that only streaming has (live expiry, restarts).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from pipeline.workload.generator import WorkloadSpec, generate_keyed_messages
from tests.integration.harness import (
    Pipeline,
    all_sessions_closed,
    consume,
    dead_letter_shape,
    per_device,
    produce,
    produce_routed,
    read_jsonl,
)

pytestmark = pytest.mark.kafka

FAST = {"session_timeout_s": 3, "idle_timeout_s": 6}
DAY_MS = 86_400_000


def decoded(records: dict[str, list[bytes]], topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for v in records[topic]]


async def stream_outputs(
    pipeline: Pipeline, messages: list[tuple[bytes | None, bytes]], timeout_s: float = 90
) -> dict[str, list[dict[str, Any]]]:
    """The worker's outputs for `messages`, read once they are complete, then 2 s longer.

    Complete: every output topic holds at least as many records as offline mode writes for
    `messages`, and every session has ended. "Every session has ended" alone is no sign that
    the worker is done: it also holds before a backlog is read (the first half's sessions all
    timed out, the second half not read yet), and a re-read started then found more.
    The 2 s after are for late duplicates; what did not come by the timeout is missing.
    """
    roles = ("sessions", "enriched", "deadletter")
    offline = pipeline.offline(messages)
    files = {"sessions": "sessions", "enriched": "enriched", "deadletter": "dead_letter"}
    expected = {pipeline.topic(r): len(read_jsonl(offline / f"{files[r]}.jsonl")) for r in roles}
    closed = all_sessions_closed(pipeline)
    settled_at: list[float] = []

    def complete_and_settled(records: dict[str, list[bytes]]) -> bool:
        if not settled_at:
            if not (all(len(records[t]) >= n for t, n in expected.items()) and closed(records)):
                return False
            settled_at.append(time.monotonic() + 2.0)
        return time.monotonic() >= settled_at[0]

    topics = list(expected)
    records = await consume(pipeline.bootstrap, topics, complete_and_settled, timeout_s)
    return {role: decoded(records, pipeline.topic(role)) for role in roles}


def assert_same_as_offline(
    pipeline: Pipeline,
    messages: list[tuple[bytes | None, bytes]],
    stream: dict[str, list[dict[str, Any]]],
) -> None:
    offline = pipeline.offline(messages)
    expected_sessions = per_device(read_jsonl(offline / "sessions.jsonl"))
    expected_enriched = per_device(read_jsonl(offline / "enriched.jsonl"))
    assert_same_per_device(per_device(stream["sessions"]), expected_sessions, pipeline)
    assert_same_per_device(per_device(stream["enriched"]), expected_enriched, pipeline)
    expected_dead = Counter(map(dead_letter_shape, read_jsonl(offline / "dead_letter.jsonl")))
    assert Counter(map(dead_letter_shape, stream["deadletter"])) == expected_dead
    assert {d["topic"] for d in stream["deadletter"]} <= {pipeline.topic("raw")}


def assert_exactly_once_as_offline(
    pipeline: Pipeline,
    messages: list[tuple[bytes | None, bytes]],
    stream: dict[str, list[dict[str, Any]]],
) -> None:
    """No session_start and no enriched event twice, and the offline outputs."""
    starts = [r["session_id"] for r in stream["sessions"] if r["type"] == "session_start"]
    assert len(starts) == len(set(starts)), "a session_start was delivered twice"
    event_keys = [(r["session_id"], r["event_id"]) for r in stream["enriched"]]
    assert len(event_keys) == len(set(event_keys)), "an enriched event was delivered twice"
    assert_same_as_offline(pipeline, messages, stream)


def wait_for_enriched(pipeline: Pipeline, more_than: int, timeout_s: float) -> None:
    """Until the enriched topic holds more than `more_than` records (the worker is busy)."""
    topic = pipeline.topic("enriched")
    asyncio.run(
        consume(pipeline.bootstrap, [topic], lambda r: len(r[topic]) > more_than, timeout_s)
    )


def assert_same_per_device(
    actual: dict[Any, list[dict[str, Any]]],
    expected: dict[Any, list[dict[str, Any]]],
    pipeline: Pipeline,
) -> None:
    differing = sorted(
        k for k in actual.keys() | expected.keys() if actual.get(k) != expected.get(k)
    )
    if differing:
        key = differing[0]
        got, want = actual.get(key, []), expected.get(key, [])
        lines = [f"{len(differing)} devices differ; first {key}:"]
        for i in range(max(len(got), len(want))):
            a = got[i] if i < len(got) else None
            b = want[i] if i < len(want) else None
            if a != b:
                lines.append(f"  [{i}] stream : {a}")
                lines.append(f"  [{i}] offline: {b}")
        raise AssertionError("\n".join(lines[:12]) + "\n" + pipeline.worker_log()[-2000:])


def workload(devices: int, batch_size: int, seed: int) -> list[tuple[bytes | None, bytes]]:
    """Generated messages keyed by device, without per-event timeouts: the generator's 30-120 s
    ones would keep these tests waiting that long (per-event timeouts are tested on their own)."""
    spec = WorkloadSpec(devices=devices, events_per_device=25, batch_size=batch_size, seed=seed)
    return [(key, _without_event_timeouts(value)) for key, value in generate_keyed_messages(spec)]


def _without_event_timeouts(message: bytes) -> bytes:
    if b"session_timeout_s" not in message:
        return message
    document = orjson.loads(message)
    for event in document.get("events", [document]):
        if isinstance(event, dict):
            event.pop("session_timeout_s", None)
    return orjson.dumps(document)


def halves(
    messages: list[tuple[bytes | None, bytes]], pause_ms: int = 60_000
) -> tuple[list[tuple[bytes | None, bytes]], list[tuple[bytes | None, bytes]]]:
    """The messages cut in two, the second half `pause_ms` later in event time.

    The tests send the second half only after a worker has started, read the first half and
    been killed: seconds in which a worker that has caught up closes, on the wall clock, every
    session quiet for its timeout + grace (SPEC section 3, live). A session whose next event
    comes within its timeout in event time would then end there or go on depending on those
    seconds. After a pause longer than every timeout it ends in offline mode too.
    """
    middle = len(messages) // 2
    later = [(key, _later(value, pause_ms)) for key, value in messages[middle:]]
    return messages[:middle], later


def _later(message: bytes, ms: int) -> bytes:
    """`message` with the time of each of its events `ms` later (bad messages as they are)."""
    try:
        document = orjson.loads(message)
    except orjson.JSONDecodeError:
        return message
    events = document.get("events", [document]) if isinstance(document, dict) else None
    if not isinstance(events, list):
        return message
    for event in events:
        if isinstance(event, dict) and type(event.get("ts")) is int:
            event["ts"] += ms
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:  # a time past what JSON writers hold: leave it out of range
        return message


def _device_of(message: bytes) -> str | None:
    try:
        document = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return document.get("device_id") if isinstance(document, dict) else None


def test_workload_through_kafka_gives_the_offline_sessions(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions=FAST)
    messages = workload(devices=150, batch_size=4, seed=11)
    pipeline.start_worker()
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), messages))
    stream = asyncio.run(stream_outputs(pipeline, messages))
    assert_same_as_offline(pipeline, messages, stream)


@pytest.mark.parametrize("keying", ["by-app", "unkeyed-crc32"])
def test_input_not_keyed_by_device_is_repartitioned_and_gives_the_same_sessions(
    pipeline_factory: Callable[..., Pipeline], keying: str
) -> None:
    """Keyed by app (murmur2), or unkeyed on a partition picked by another hash (as librdkafka's
    default partitioner does): each device's messages stay in order on one partition, but
    mostly not on the partition its device id hashes to, so the worker must forward them."""
    pipeline = pipeline_factory(sessions=FAST)
    messages = workload(devices=80, batch_size=2, seed=12)
    routed: list[tuple[bytes | None, bytes, int | None]] = []
    for _, value in messages:
        device = _device_of(value)
        if keying == "by-app":
            app = orjson.loads(value).get("app_id", "") if device else ""
            routed.append((str(app).encode(), value, None))
        else:
            partition = zlib.crc32((device or "").encode()) % 3
            routed.append((None, value, partition))
    pipeline.start_worker()
    asyncio.run(produce_routed(pipeline.bootstrap, pipeline.topic("raw"), routed))
    stream = asyncio.run(stream_outputs(pipeline, messages))
    assert_same_as_offline(pipeline, messages, stream)


def test_replayed_backlog_of_old_events_is_not_expired_by_the_wall_clock(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions={"session_timeout_s": 60, "idle_timeout_s": 1800})
    start = time.time_ns() // 1_000_000 - 3 * DAY_MS
    lifecycle = [
        ("app_launch", 0),
        ("app_background", 10_000),
        ("app_foreground", 69_999),  # 59.999 s in the background: same session
        ("app_background", 80_000),
        ("custom_event", 130_000),  # in the background: pushes the deadline back
        ("app_foreground", 189_999),
        ("app_background", 200_000),
        ("app_foreground", 260_000),  # exactly the timeout: a new session
        ("app_terminate", 261_000),
    ]
    messages = [
        (
            b"old-device",
            orjson.dumps(
                {
                    "event_id": f"old-{i}",
                    "app_id": "a",
                    "device_id": "old-device",
                    "type": kind,
                    "ts": start + offset,
                }
            ),
        )
        for i, (kind, offset) in enumerate(lifecycle)
    ]
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), messages))
    pipeline.start_worker()
    stream = asyncio.run(stream_outputs(pipeline, messages, timeout_s=60))
    ends = [r for r in stream["sessions"] if r["type"] == "session_end"]
    assert [e["end_reason"] for e in ends] == ["timeout", "terminate"]
    assert_same_as_offline(pipeline, messages, stream)


@pytest.mark.parametrize(
    ("configured", "per_event"), [(2, None), (60, 2)], ids=["config-timeout", "per-event-timeout"]
)
def test_quiet_backgrounded_session_ends_within_timeout_plus_grace_plus_2s(
    pipeline_factory: Callable[..., Pipeline], configured: int, per_event: int | None
) -> None:
    pipeline = pipeline_factory(sessions={"session_timeout_s": configured}, grace_s=1.0)
    pipeline.start_worker()
    # Wait until the worker answers, so its start-up time is not counted.
    now = time.time_ns() // 1_000_000
    ping = orjson.dumps(
        {"event_id": "p", "app_id": "a", "device_id": "ping", "type": "app_terminate", "ts": now}
    )
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), [(b"ping", ping)]))
    asyncio.run(
        consume(
            pipeline.bootstrap,
            [pipeline.topic("sessions")],
            lambda r: len(r[pipeline.topic("sessions")]) >= 2,
            60,
        )
    )

    now = time.time_ns() // 1_000_000
    events = [
        {"event_id": "l1", "app_id": "a", "device_id": "quiet", "type": "app_launch", "ts": now},
        {
            "event_id": "l2",
            "app_id": "a",
            "device_id": "quiet",
            "type": "app_background",
            "ts": now + 5,
        },
    ]
    if per_event is not None:
        events[1]["session_timeout_s"] = per_event
    asyncio.run(
        produce(
            pipeline.bootstrap, pipeline.topic("raw"), [(b"quiet", orjson.dumps(e)) for e in events]
        )
    )
    sent = time.monotonic()

    def quiet_ended(records: dict[str, list[bytes]]) -> bool:
        return any(
            r["type"] == "session_end" and r["device_id"] == "quiet"
            for r in map(orjson.loads, records[pipeline.topic("sessions")])
        )

    asyncio.run(consume(pipeline.bootstrap, [pipeline.topic("sessions")], quiet_ended, 30))
    elapsed = time.monotonic() - sent
    assert elapsed <= 2 + 1 + 2, f"session_end after {elapsed:.1f} s"
    assert elapsed >= 2, f"session_end after {elapsed:.1f} s: earlier than the timeout"


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_stop_mid_stream_loses_nothing_and_delivers_nothing_twice(
    pipeline_factory: Callable[..., Pipeline], stop: signal.Signals, store: str
) -> None:
    pipeline = pipeline_factory(sessions=FAST, worker={"store": store})
    first, second = halves(workload(devices=300, batch_size=2, seed=13))
    messages = first + second
    pipeline.start_worker()
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), first))
    # Kill it once it is busy with the first half (on a slow machine it may have read all of it
    # and be waiting by then: see `halves`), then queue the rest as a backlog.
    wait_for_enriched(pipeline, more_than=200, timeout_s=60)
    pipeline.workers[-1].send_signal(stop)
    pipeline.workers[-1].wait(20)  # a clean stop must not hang on unacked messages
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), second))
    pipeline.start_worker()
    stream = asyncio.run(stream_outputs(pipeline, messages, timeout_s=120))

    assert_exactly_once_as_offline(pipeline, messages, stream)


def test_a_second_worker_takes_over_from_one_killed_for_good(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    # Two workers share the partitions; one is killed and never comes back. The other must
    # recover its devices (the changelog ends in the dead worker's aborted transaction) and
    # finish the work: nothing lost, nothing delivered twice.
    pipeline = pipeline_factory(sessions=FAST, partitions=4)
    first, second = halves(workload(devices=300, batch_size=2, seed=17))
    messages = first + second
    survivor = pipeline.start_worker(instance_id="survivor")
    doomed = pipeline.start_worker(instance_id="doomed")
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), first))
    wait_for_enriched(pipeline, more_than=200, timeout_s=90)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(20)
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), second))
    stream = asyncio.run(stream_outputs(pipeline, messages, timeout_s=150))
    assert survivor.poll() is None

    assert_exactly_once_as_offline(pipeline, messages, stream)


def test_clean_restart_recovers_open_sessions_with_their_ids(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    pipeline = pipeline_factory(sessions={"session_timeout_s": 60})
    now = time.time_ns() // 1_000_000

    def event(event_id: str, kind: str, ts: int) -> tuple[bytes, bytes]:
        body = {"event_id": event_id, "app_id": "a", "device_id": "d", "type": kind, "ts": ts}
        return b"d", orjson.dumps(body)

    pipeline.start_worker()
    asyncio.run(
        produce(pipeline.bootstrap, pipeline.topic("raw"), [event("r1", "app_launch", now)])
    )
    asyncio.run(
        consume(
            pipeline.bootstrap,
            [pipeline.topic("enriched")],
            lambda r: len(r[pipeline.topic("enriched")]) >= 1,
            60,
        )
    )
    pipeline.stop_workers(signal.SIGTERM)
    pipeline.start_worker()
    asyncio.run(
        produce(
            pipeline.bootstrap, pipeline.topic("raw"), [event("r2", "app_terminate", now + 1000)]
        )
    )
    records = asyncio.run(
        consume(
            pipeline.bootstrap,
            [pipeline.topic("sessions"), pipeline.topic("enriched")],
            all_sessions_closed(pipeline),
            60,
        )
    )
    sessions = decoded(records, pipeline.topic("sessions"))
    enriched = decoded(records, pipeline.topic("enriched"))
    assert [r["type"] for r in sessions] == ["session_start", "session_end"]
    assert sessions[1]["event_count"] == 2
    assert {e["session_id"] for e in enriched} == {sessions[0]["session_id"]}
    assert [e["session_seq"] for e in enriched] == [1, 2]


def test_bad_messages_go_to_the_dead_letter_topic_and_processing_goes_on(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    web_port = _free_port()
    pipeline = pipeline_factory(sessions=FAST, input={"max_event_bytes": 10_000}, web_port=web_port)
    now = time.time_ns() // 1_000_000
    good = {"event_id": "g1", "app_id": "a", "device_id": "d", "type": "app_terminate", "ts": now}
    messages: list[tuple[bytes | None, bytes]] = [
        (b"d", b"\xff\xfe\x00garbage"),
        (None, b'{"event_id": 1, "app_id": "a", "device_id": "d", "type": "app_launch", "ts": 1}'),
        (b"d", orjson.dumps({**good, "event_id": "big", "name": "x" * 20_000})),
        (b"d", b"[1,2,3]"),
        (b"d", orjson.dumps({**good, "ts": 5})),
        (b"d", orjson.dumps(good)),
    ]
    pipeline.start_worker()
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), messages))
    stream = asyncio.run(stream_outputs(pipeline, messages, timeout_s=60))
    reasons = [d["reason"] for d in stream["deadletter"]]
    assert sorted(reasons) == sorted(
        ["malformed_json", "invalid_event", "too_large", "malformed_json", "timestamp_out_of_range"]
    )
    assert {
        d["payload_encoding"] for d in stream["deadletter"] if d["reason"] == "malformed_json"
    } == {"base64", "utf-8"}
    assert all(
        isinstance(d["offset"], int) and d["topic"] == pipeline.topic("raw")
        for d in stream["deadletter"]
    )
    assert [e["event_id"] for e in stream["enriched"]] == ["g1"]
    # The configured port is the worker's own endpoint: Faust's web server (off) did not take it.
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=5) as reply:
        assert orjson.loads(reply.read())["alive"] is True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_worker_fills_every_partner_topic_like_offline(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    partners = [
        {"name": "canonical", "format": "canonical"},
        {"name": "amplitude", "format": "amplitude"},
        {"name": "ga4", "format": "ga4", "event_types": ["screen_view", "commerce_event"]},
        {"name": "mixpanel", "format": "mixpanel", "attributes_allowlist": ["sku"]},
        {"name": "braze", "format": "braze", "session_timeout_s": 1},
    ]
    pipeline = pipeline_factory(sessions=FAST, partners=partners)
    messages = workload(devices=40, batch_size=3, seed=21)
    pipeline.start_worker()
    asyncio.run(produce(pipeline.bootstrap, pipeline.topic("raw"), messages))
    asyncio.run(stream_outputs(pipeline, messages))  # every pipeline session closed
    offline = pipeline.offline(messages)
    topics = {p["name"]: pipeline.topic("partner." + p["name"]) for p in partners}
    expected = {
        name: Counter(
            orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
            for r in read_jsonl(offline / "partners" / f"{name}.jsonl")
        )
        for name in topics
    }

    def complete(records: dict[str, list[bytes]]) -> bool:
        return all(len(records[topics[n]]) >= sum(expected[n].values()) for n in topics)

    records = asyncio.run(consume(pipeline.bootstrap, list(topics.values()), complete, 60))
    for name, topic in topics.items():
        got = Counter(
            orjson.dumps(orjson.loads(v), option=orjson.OPT_SORT_KEYS) for v in records[topic]
        )
        assert got == expected[name], (
            f"partner {name}: {sum(got.values())} vs {sum(expected[name].values())}"
        )
        assert got, f"partner {name} got nothing"
