"""Interop with a client that is not ours: Debian's `kcat` (librdkafka) writes raw events to the
input topic, a worker sessionizes them, and `kcat` reads a partner topic back.

CI installs kcat (`.ci/run`); the test is skipped only when it cannot be found.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.integration.harness import Pipeline, read_jsonl

pytestmark = pytest.mark.kafka

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def kcat(bootstrap: str, *argv: str, stdin: bytes | None = None) -> bytes:
    assert KCAT is not None
    result = subprocess.run(
        [KCAT, "-b", bootstrap, *argv],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def read_partner(pipeline: Pipeline, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """(key, record) of every committed message of `topic`, read by kcat to the end."""
    out = kcat(
        pipeline.bootstrap,
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
        "-X",
        "isolation.level=read_committed",
        "-f",
        "%k\t%s\n",
    )
    pairs = []
    for line in out.splitlines():
        key, value = line.split(b"\t", 1)
        pairs.append((key.decode(), orjson.loads(value)))
    return pairs


def sessions_of_three_devices(now: int) -> list[dict[str, Any]]:
    """A terminated session with a resume in time and a resent event; a background past the
    timeout (2 s) that starts a second session; a session left in the background."""
    timeline = {
        "phone-a": [
            ("app_launch", 0),
            ("screen_view", 100),
            ("app_background", 200),
            ("app_foreground", 1_200),
            ("custom_event", 1_300),
            ("app_terminate", 1_400),
        ],
        "phone-b": [
            ("app_launch", 0),
            ("app_background", 100),
            ("app_foreground", 3_000),
            ("app_terminate", 3_100),
        ],
        "phone-c": [("app_launch", 0), ("screen_view", 50), ("app_background", 100)],
    }
    events = []
    for device, steps in timeline.items():
        for number, (kind, offset) in enumerate(steps, start=1):
            events.append(
                {
                    "event_id": f"{device}-{number}",
                    "app_id": "shop",
                    "device_id": device,
                    "type": kind,
                    "ts": now + offset,
                }
            )
    events.insert(3, dict(events[1]))  # phone-a's screen_view, sent twice by its SDK
    return events


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed (apt-get install kcat)")
def test_kcat_in_kcat_out(pipeline_factory: Callable[..., Pipeline]) -> None:
    pipeline = pipeline_factory(
        partitions=3,
        sessions={"session_timeout_s": 2, "idle_timeout_s": 30},
        partners=[
            {"name": "amp", "format": "amplitude"},
            {"name": "mix", "format": "mixpanel"},
        ],
    )
    pipeline.start_worker()
    events = sessions_of_three_devices(time.time_ns() // 1_000_000)
    lines = b"".join(e["device_id"].encode() + b"\t" + orjson.dumps(e) + b"\n" for e in events)
    # Idempotent, so that the events stay in order: librdkafka's default producer sends each
    # message of a flush in its own request, all in flight at once, and retries a failed one
    # (the broker answers "not leader" for a while after a topic is created) after the others
    # went through. A device's app_launch written after its next events opens a session of
    # its own, which offline mode, reading the file in order, never sees.
    produce = ("-P", "-X", "enable.idempotence=true", "-t", pipeline.topic("raw"), "-K", "\t")
    kcat(pipeline.bootstrap, *produce, stdin=lines)
    written = [record for _, record in read_partner(pipeline, pipeline.topic("raw"))]
    assert per_device_ids(written) == per_device_ids(events), "kcat reordered the input"

    offline = pipeline.offline([(None, orjson.dumps(e)) for e in events])
    for name, dedup_key in (("amp", _amplitude_key), ("mix", _mixpanel_key)):
        expected = read_jsonl(offline / "partners" / f"{name}.jsonl")
        assert len(expected) == 4 * 2 + 13  # 4 sessions (start, end) and 13 distinct events
        received = _wait_for(pipeline, pipeline.topic(f"partner.{name}"), len(expected))
        records = [record for _, record in received]
        assert len(records) == len(expected)
        assert sorted(map(dedup_key, records)) == sorted(map(dedup_key, expected))
        assert _sorted(records) == _sorted(expected)
        assert {key for key, _ in received} == {"phone-a", "phone-b", "phone-c"}
    amplitude = [r for _, r in read_partner(pipeline, pipeline.topic("partner.amp"))]
    ends = [r for r in amplitude if r["event_type"] == "session_end"]
    assert sorted(r["event_properties"]["end_reason"] for r in ends) == [
        "terminate",
        "terminate",
        "timeout",
        "timeout",
    ]


def per_device_ids(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each device's event ids, in order."""
    ids: dict[str, list[str]] = {}
    for event in events:
        ids.setdefault(event["device_id"], []).append(event["event_id"])
    return ids


def _wait_for(pipeline: Pipeline, topic: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    deadline = time.monotonic() + 60
    received = read_partner(pipeline, topic)
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.5)
        received = read_partner(pipeline, topic)
    assert len(received) >= count, pipeline.worker_log()
    time.sleep(1.0)  # a duplicate, if any, would show now
    return read_partner(pipeline, topic)


def _amplitude_key(record: dict[str, Any]) -> tuple[str, int, str]:
    return record["device_id"], record["session_id"], record["insert_id"]


def _mixpanel_key(record: dict[str, Any]) -> tuple[str, str]:
    properties = record["properties"]
    return properties["session_id"], properties["$insert_id"]


def _sorted(records: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records)
