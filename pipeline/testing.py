"""Helpers for tests of the pipeline without Kafka (as bytewax's `testing`): a list sink, a
fake clock, fetched records and small event factories.

    clock = FakeClock(T0)
    sink = ListSink()
    core = StreamingCore(config, 1, "repartition", clock)
    core.writer.sink = sink
    core.apply(("input", 0), [fetched(0, launch("d1", T0))], 0)
    sink.values("sessions")  # -> [{"type": "session_start", ...}]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import orjson

from pipeline.engine import Record
from pipeline.sinks.kafka import Headers, RecordTooLarge, Refused, record_size
from pipeline.vocabulary import (
    APP_BACKGROUND,
    APP_FOREGROUND,
    APP_LAUNCH,
    APP_TERMINATE,
    SCREEN_VIEW,
)

T0 = 1_790_000_000_000  # an event time in 2026, in ms
SECOND = 1000
_event_ids = count(1)


def event(kind: str, device_id: str = "d1", ts: int = T0, **fields: Any) -> Record:
    """An input event of app "a1" with a fresh event id (`fields` are added or override)."""
    body: Record = {
        "event_id": f"e{next(_event_ids)}",
        "app_id": "a1",
        "device_id": device_id,
        "type": kind,
        "ts": ts,
    }
    body.update(fields)
    return body


def launch(device_id: str = "d1", ts: int = T0, **fields: Any) -> Record:
    """An app_launch event."""
    return event(APP_LAUNCH, device_id, ts, **fields)


def background(device_id: str = "d1", ts: int = T0, **fields: Any) -> Record:
    """An app_background event."""
    return event(APP_BACKGROUND, device_id, ts, **fields)


def foreground(device_id: str = "d1", ts: int = T0, **fields: Any) -> Record:
    """An app_foreground event."""
    return event(APP_FOREGROUND, device_id, ts, **fields)


def terminate(device_id: str = "d1", ts: int = T0, **fields: Any) -> Record:
    """An app_terminate event."""
    return event(APP_TERMINATE, device_id, ts, **fields)


def screen_view(device_id: str = "d1", ts: int = T0, **fields: Any) -> Record:
    """An event with no meaning for sessions."""
    return event(SCREEN_VIEW, device_id, ts, **fields)


def batch(*events: Record) -> Record:
    """A batch message of events (their identity fields stay on each event)."""
    first = events[0]
    return {"app_id": first["app_id"], "device_id": first["device_id"], "events": list(events)}


@dataclass(slots=True)
class FetchedRecord:
    """A record as a consumer fetched it (the fields of aiokafka's ConsumerRecord)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Any = ()


def fetched(
    offset: int,
    message: Record | bytes,
    *,
    timestamp: int = T0,
    topic: str = "input",
    partition: int = 0,
    key: bytes | None = None,
    headers: Any = (),
) -> FetchedRecord:
    """A fetched record of `message` (serialized if a dict), arrived at `timestamp`."""
    value = message if isinstance(message, bytes) else orjson.dumps(message)
    return FetchedRecord(topic, partition, offset, key, value, timestamp, headers)


@dataclass(slots=True)
class FakeClock:
    """A wall clock that moves only when told; call it for the time in ms."""

    now_ms: int = T0

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        """Move the clock on by `ms`."""
        self.now_ms += ms


@dataclass(frozen=True, slots=True)
class Written:
    """One record a sink was given."""

    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone
    partition: int | None
    timestamp_ms: int | None
    headers: Headers | None


@dataclass(slots=True)
class ListSink:
    """A sink that keeps every record in a list; with `room` (or `rooms[topic]` for a topic),
    refuses larger ones as a topic would (key, value and headers counted)."""

    room: int | None = None
    rooms: dict[str, int] = field(default_factory=dict)
    written: list[Written] = field(default_factory=list)

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Keep one record; RecordTooLarge if over `room`."""
        size = record_size(key, value, headers)
        room = self.rooms.get(topic, self.room)
        if room is not None and size > room:
            raise RecordTooLarge(topic, size, room)
        self.written.append(Written(topic, key, value, partition, timestamp_ms, headers))

    def add_values(self, topic: str, key: bytes, values: list[bytes]) -> list[Refused]:
        """Keep one record per value; returns those over `room`, by position."""
        refused: list[Refused] = []
        for position, value in enumerate(values):
            try:
                self.add(topic, key, value)
            except RecordTooLarge as exc:
                refused.append((position, exc))
        return refused

    def on(self, topic: str) -> list[Written]:
        """The records written to `topic`, in order."""
        return [w for w in self.written if w.topic == topic]

    def values(self, topic: str) -> list[Any]:
        """The JSON values written to `topic`, parsed, in order (None for a tombstone)."""
        return [None if w.value is None else orjson.loads(w.value) for w in self.on(topic)]

    def topics(self) -> set[str]:
        """Every topic written to."""
        return {w.topic for w in self.written}

    def clear(self) -> None:
        """Forget what was written."""
        self.written.clear()


def types(records: Iterable[Record]) -> list[str]:
    """The `type` of each record, in order."""
    return [record["type"] for record in records]
