"""A seeded synthetic workload of mobile SDK traffic, for tests, benchmarks and the demo.

A population of devices, each installed with one app, lives through app lifecycles:
`app_launch`, a stretch of screen views, custom and commerce events and session attribute
changes, `app_background`, then one of: a resume within the session timeout, a resume past it
(a new session by SPEC section 3), an `app_terminate`, a force quit (a new `app_launch` while the
session is still open), a crash in the foreground, a foreground idle past `idle_timeout`, or a
long idle before the next launch. Gaps after a background event straddle the timeout (exactly
`timeout - 1`, `timeout` and `timeout + 1` ms happen), users log in part way through a session
and occasionally change, a few devices carry their SDK's `session_timeout_s` on every event,
and background tasks sometimes log events while the app is backgrounded.

On top of that the SDK noise: a share of events is sent again in the device's next upload (same
event_id and content, so dedup by the engine is exercised, terminate retries included), and a
share of messages is bad (garbage bytes, truncated JSON, a JSON array, a batch whose `events` is
not an array, a missing field, `ts` as a string, an unknown `type`, a non-numeric increment, `ts`
before 2000, an increment of an attribute holding text). Bad messages never affect sessions; a bad
event's id is `<device_id>-bad-<n>`, never the id of a valid event.

Uploads: events are uploaded in batches of one device (`batch_size`), flushed when the app
backgrounds or terminates, before a launch and before a resume that starts a new session (so a
batch never spans a session boundary and a retry always lands in the session it repeats or the
one right after it); `batch_size=1` gives one plain event per message. Messages of all devices
are merged in arrival order (upload time = last event's ts + a short delay), each device's
messages in its own order.

Everything is a pure function of the `WorkloadSpec`: the same spec gives byte-identical output.
Each device draws from its own `random.Random`, and the duplicate and bad-message decisions
consume the same draws whatever the rates, so a device's valid events do not depend on
`duplicate_rate`, `bad_rate` or `batch_size`. Gaps are chosen against the default session
timeout (60 s, or the device's own `session_timeout_s`) and idle timeout (1800 s).

The parts: `pipeline.workload.spec` (what to generate), `device` (one device's life),
`bad_messages` (the noise), `render` (uploads to events or messages); this module merges the
devices' uploads in arrival order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, Final

from pipeline.workload.device import SimulatedDevice
from pipeline.workload.render import Render, Row, message_renderer, render_events
from pipeline.workload.spec import START_WINDOW_MS, WorkloadSpec

__all__ = [
    "WorkloadSpec",
    "generate_events",
    "generate_keyed_messages",
    "generate_messages",
    "write_jsonl",
]

_BUCKET_MS: Final = 60_000  # the merge sorts arrivals one minute at a time
_arrival: Final = itemgetter(0)


def generate_events(spec: WorkloadSpec) -> Iterator[dict[str, Any]]:
    """The valid events of the workload in arrival order, retried duplicates included.

    Each is a full event (event_id, app_id, device_id, type, ts, optional fields), exactly what
    the valid messages of `generate_messages` hold once batch fields are inherited. A device's
    events are in its own order with non-decreasing `ts`, except that a retry repeats an earlier
    event (same content, original `ts`) at the start of the device's next upload.
    """
    for bucket in _merged(spec, render_events):
        for row in bucket:
            yield row[1]


def generate_keyed_messages(spec: WorkloadSpec) -> Iterator[tuple[bytes | None, bytes]]:
    """The messages with their Kafka key: the device_id bytes, or None for garbage bytes."""
    for bucket in _merged(spec, message_renderer(spec)):
        for row in bucket:
            yield row[1], row[2]


def generate_messages(spec: WorkloadSpec) -> Iterator[bytes]:
    """The messages as produced to Kafka or written as JSONL lines (no trailing newline).

    Single events or batches serialized with orjson, bad messages mixed in; never contains a
    newline byte, so a message is always exactly one line.
    """
    for bucket in _merged(spec, message_renderer(spec)):
        for row in bucket:
            yield row[2]


def write_jsonl(spec: WorkloadSpec, path: Path) -> int:
    """Write the messages to `path`, one per line, and return the number of lines."""
    lines = 0
    chunk: list[bytes] = []
    with path.open("wb") as out:
        for message in generate_messages(spec):
            chunk.append(message)
            if len(chunk) == 10_000:
                lines += _write_lines(out, chunk)
        lines += _write_lines(out, chunk)
    return lines


def _write_lines(out: BinaryIO, chunk: list[bytes]) -> int:
    if chunk:
        out.write(b"\n".join(chunk))
        out.write(b"\n")
    count = len(chunk)
    chunk.clear()
    return count


def _merged(spec: WorkloadSpec, render: Render) -> Iterator[list[Row]]:
    """Every device's rendered uploads as rows, in arrival order.

    Yields one time bucket at a time. Devices are simulated in index order and a device's rows
    are appended in its own order, so the stable sort by arrival alone orders ties by device,
    then by position. A device is simulated only when the merge nears its first
    launch, so memory holds the output of the devices active at the moment, not the workload.
    """
    buckets: dict[int, list[Row]] = {}
    pending: list[int] = []  # heap of the bucket numbers in `buckets`
    devices = spec.devices
    next_index = 0
    while True:
        # Every upload of device i arrives at or after _earliest_start(i), which grows with i.
        next_bucket = (
            _earliest_start(spec, next_index) // _BUCKET_MS if next_index < devices else -1
        )
        if pending and (next_bucket < 0 or pending[0] < next_bucket):
            bucket = buckets.pop(heapq.heappop(pending))
            bucket.sort(key=_arrival)
            yield bucket
            continue
        if next_bucket < 0:
            return
        device = SimulatedDevice(spec, next_index)
        for arrival, entries in device.run():
            number = arrival // _BUCKET_MS
            rows = buckets.get(number)
            if rows is None:
                rows = buckets[number] = []
                heapq.heappush(pending, number)
            rows.extend(render(device, arrival, entries))
        next_index += 1


def _earliest_start(spec: WorkloadSpec, index: int) -> int:
    return spec.start_ms + index * START_WINDOW_MS // spec.devices
