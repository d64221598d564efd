"""The streaming core without a broker: fetched records in, records out; expiry by a fake
clock; rebalances; rollback to the last commit."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.config import Config, WorkerSettings
from pipeline.engine import Record, SessionConfig
from pipeline.partners import Partner
from pipeline.streaming.codec import CHECKPOINT_KEY, DeviceEntry, table_key
from pipeline.streaming.core import StreamingCore
from pipeline.streaming.outputs import ORIGIN_HEADER
from pipeline.streaming.partitioning import partition_for
from pipeline.testing import (
    SECOND,
    T0,
    FakeClock,
    ListSink,
    background,
    batch,
    event,
    fetched,
    launch,
    screen_view,
    types,
)

TIMEOUT = 60 * SECOND
GRACE = 2 * SECOND
REPARTITION = "sessionize-by-device"
MIRROR = Partner(name="mirror", format="canonical", topic="partner.mirror")


def device_on(partition: int, partitions: int, prefix: str = "d") -> str:
    """A device id that Kafka's default partitioner puts on `partition`."""
    return next(
        f"{prefix}{n}"
        for n in range(1000)
        if partition_for(f"{prefix}{n}", partitions) == partition
    )


class Stream:
    """A streaming core with a list sink and a fake clock; offsets count up per partition."""

    def __init__(
        self,
        partitions: int = 1,
        stored: dict[bytes, bytes] | None = None,
        room: int | None = None,
        rooms: dict[str, int] | None = None,
        **worker: Any,
    ) -> None:
        self.config = Config(
            sessions=SessionConfig(session_timeout_s=TIMEOUT / 1000),
            worker=WorkerSettings(grace_s=GRACE / 1000, **worker),
            partners=(MIRROR,),
        )
        self.clock = FakeClock(T0)
        self.sink = ListSink(room, rooms or {})
        self.stored = {} if stored is None else stored
        self.core = StreamingCore(self.config, partitions, REPARTITION, self.clock, self.stored)
        self.core.writer.sink = self.sink
        self.core.reindex(frozenset(range(partitions)))
        self.offsets: dict[tuple[str, int], int] = {}

    def send(
        self,
        *messages: Record | bytes,
        partition: int = 0,
        arrival: int = T0,
        topic: str = "events.raw",
        key: bytes | None = None,
        headers: Any = (),
    ) -> None:
        """Feed one fetch of `messages` to the core, arrived at `arrival`."""
        tp = (topic, partition)
        first = self.offsets.get(tp, 0)
        records = [
            fetched(
                offset,
                message,
                timestamp=arrival,
                topic=topic,
                partition=partition,
                key=key,
                headers=headers,
            )
            for offset, message in enumerate(messages, start=first)
        ]
        self.offsets[tp] = first + len(messages)
        self.core.apply(tp, records, first)

    def commit(self) -> None:
        """What a checkpoint does to the core: changed devices to the table, then committed."""
        self.core.committed([(key, value) for key, _, value in self.core.changes()])

    def sessions(self) -> list[Record]:
        return self.sink.values(self.config.topics.sessions)

    def enriched(self) -> list[Record]:
        return self.sink.values(self.config.topics.enriched)

    def dead_letters(self) -> list[Record]:
        return self.sink.values(self.config.topics.deadletter)


# Records in, records out


def test_a_launch_writes_a_session_start_and_its_enriched_event_keyed_by_device() -> None:
    stream = Stream()
    stream.send(launch("d1", T0))
    (start,) = stream.sessions()
    (enriched,) = stream.enriched()
    assert start["type"] == "session_start"
    assert enriched["session_id"] == start["session_id"]
    assert {w.key for w in stream.sink.written} == {b"d1"}


def test_a_verbatim_partner_gets_every_record_of_the_pipeline_in_order() -> None:
    stream = Stream()
    stream.send(launch("d1", T0), screen_view("d1", T0 + 1))
    mirrored = stream.sink.values(MIRROR.topic)
    assert types(mirrored) == ["session_start", "app_launch", "screen_view"]


def test_a_malformed_message_is_a_dead_letter_naming_its_offset_and_keyed_as_it_was() -> None:
    stream = Stream()
    stream.send(launch("d1", T0), b"{not json", key=b"k")
    (dead,) = stream.dead_letters()
    assert (dead["reason"], dead["topic"], dead["partition"], dead["offset"]) == (
        "malformed_json",
        "events.raw",
        0,
        1,
    )
    assert stream.sink.on(stream.config.topics.deadletter)[0].key == b"k"


def attribute(device_id: str, ts: int, op: str, value: Any) -> Record:
    """A session_attribute event on key "n"."""
    return event(
        "session_attribute", device_id, ts, attribute={"op": op, "key": "n", "value": value}
    )


def test_a_refused_attribute_increment_is_a_dead_letter_with_its_batch_index() -> None:
    stream = Stream()
    stream.send(launch("d1", T0), attribute("d1", T0 + 1, "set", "x"))
    stream.send(batch(screen_view("d1", T0 + 2), attribute("d1", T0 + 3, "increment", 1)))
    (dead,) = stream.dead_letters()
    assert (dead["reason"], dead["offset"], dead["index"]) == ("attribute_not_numeric", 2, 1)
    assert types(stream.enriched()) == ["app_launch", "session_attribute", "screen_view"]


def test_an_event_of_another_partitions_device_is_forwarded_to_that_partition() -> None:
    stream = Stream(partitions=2)
    elsewhere = device_on(1, 2)
    stream.send(screen_view(elsewhere, T0), partition=0, arrival=T0 + 5)
    (forwarded,) = stream.sink.written
    assert (forwarded.topic, forwarded.partition, forwarded.key) == (
        REPARTITION,
        1,
        elsewhere.encode(),
    )
    assert forwarded.timestamp_ms == T0 + 5
    assert [e["device_id"] for e in orjson.loads(forwarded.value)["events"]] == [elsewhere]
    assert forwarded.headers is not None
    ((name, header),) = forwarded.headers
    assert name == ORIGIN_HEADER
    assert orjson.loads(header) == {
        "origin": {"topic": "events.raw", "partition": 0, "offset": 0},
        "indices": [None],
    }
    assert stream.sessions() == []


def test_a_forwarded_batch_is_applied_on_its_partition_and_its_rejections_name_the_origin() -> None:
    stream = Stream(partitions=2)
    here, elsewhere = device_on(0, 2), device_on(1, 2)
    stream.send(
        batch(
            launch(here, T0),
            launch(elsewhere, T0),
            attribute(elsewhere, T0 + 1, "set", "x"),
            attribute(elsewhere, T0 + 2, "increment", 1),
        ),
        partition=0,
        key=b"batch",
    )
    (forwarded,) = stream.sink.on(REPARTITION)
    stream.sink.clear()
    stream.send(
        forwarded.value,
        topic=REPARTITION,
        partition=1,
        key=forwarded.key,
        headers=forwarded.headers,
    )
    assert [s["device_id"] for s in stream.sessions()] == [elsewhere]
    (dead,) = stream.dead_letters()
    assert (dead["reason"], dead["topic"], dead["partition"], dead["offset"], dead["index"]) == (
        "attribute_not_numeric",
        "events.raw",
        0,
        0,
        3,
    )
    # keyed as the message it came in, the forwarded one: by its device
    assert stream.sink.on(stream.config.topics.deadletter)[0].key == elsewhere.encode()


def test_records_before_the_start_offset_were_applied_already_and_are_skipped() -> None:
    stream = Stream()
    records = [fetched(0, launch("d1", T0)), fetched(1, screen_view("d1", T0 + 1))]
    assert stream.core.apply(("events.raw", 0), records, start=1) == 1
    assert types(stream.enriched()) == ["screen_view"]
    assert stream.core.positions[("events.raw", 0)] == 2


def test_an_output_too_large_for_its_topic_becomes_a_too_large_dead_letter() -> None:
    stream = Stream(room=600, rooms={"events.deadletter": 100_000})
    stream.send(launch("d1", T0, padding="x" * 500))
    assert types(stream.sessions()) == ["session_start"]
    assert stream.enriched() == []
    (dead,) = stream.dead_letters()
    assert dead["reason"] == "too_large"
    assert "app_launch record" in dead["error"]


def test_an_output_too_large_is_left_out_of_verbatim_partners_and_the_rest_keep_their_order() -> (
    None
):
    stream = Stream(room=600, rooms={"events.deadletter": 100_000})
    big = screen_view("d1", T0 + 1, padding="x" * 500)
    stream.send(batch(launch("d1", T0), big, screen_view("d1", T0 + 2, name="after")))
    assert types(stream.sessions()) == ["session_start"]
    assert [(r["type"], r.get("name")) for r in stream.enriched()] == [
        ("app_launch", None),
        ("screen_view", "after"),
    ]
    mirrored = stream.sink.values(MIRROR.topic)
    assert types(mirrored) == ["session_start", "app_launch", "screen_view"]
    assert mirrored[2]["name"] == "after"
    (dead,) = stream.dead_letters()
    assert dead["reason"] == "too_large"
    assert big["event_id"] in dead["error"]


# Expiry by the clock


def backgrounded(stream: Stream, device_id: str = "d1", partition: int = 0) -> None:
    """Launched at T0 and backgrounded 1 s later, both arrived at T0."""
    stream.send(launch(device_id, T0), background(device_id, T0 + SECOND), partition=partition)


def test_a_backgrounded_session_ends_at_timeout_plus_grace_after_its_arrival_not_before() -> None:
    stream = Stream()
    backgrounded(stream)
    stream.core.clocks[0].caught_up = True
    due = T0 + TIMEOUT + GRACE  # the background event at T0 + 1 s arrived at T0
    stream.clock.now_ms = due - 1
    stream.core.expire(0)
    assert types(stream.sessions()) == ["session_start"]
    stream.clock.now_ms = due
    stream.core.expire(0)
    (_, end) = stream.sessions()
    assert (end["type"], end["end_reason"]) == ("session_end", "timeout")


def test_while_replaying_the_wall_clock_does_not_expire_sessions() -> None:
    stream = Stream()
    backgrounded(stream)
    stream.clock.advance(10 * TIMEOUT)  # not caught up: the records' clock stands at T0
    stream.core.expire(0)
    assert types(stream.sessions()) == ["session_start"]


def test_while_replaying_later_records_move_the_clock_to_the_deadline() -> None:
    stream = Stream()
    backgrounded(stream, "d1")
    stream.send(launch("d2", T0 + 2 * TIMEOUT), arrival=T0 + TIMEOUT + GRACE)
    stream.core.expire(0)
    ends = [s for s in stream.sessions() if s["type"] == "session_end"]
    assert [(e["device_id"], e["end_reason"]) for e in ends] == [("d1", "timeout")]


def test_an_expired_device_is_written_at_the_next_commit() -> None:
    stream = Stream()
    backgrounded(stream)
    stream.commit()
    stream.core.clocks[0].caught_up = True
    stream.clock.now_ms = T0 + TIMEOUT + GRACE
    stream.core.expire(0)
    assert [key for key, _, _ in stream.core.changes()] == [table_key("a1", "d1")]


# Rebalances


def table_of(*devices: tuple[str, int]) -> dict[bytes, bytes]:
    """A committed table: each (device, partition) backgrounded at T0 on its partition."""
    partitions = 1 + max(p for _, p in devices)
    stream = Stream(partitions)
    for device_id, partition in devices:
        assert partition_for(device_id, partitions) == partition
        backgrounded(stream, device_id, partition)
    stream.commit()
    stream.stored[CHECKPOINT_KEY] = b""  # a checkpoint marker: no device
    return stream.stored


def test_assigned_partitions_book_the_deadlines_of_their_devices_from_the_table() -> None:
    here, elsewhere = device_on(0, 2), device_on(1, 2)
    stream = Stream(2, stored=table_of((here, 0), (elsewhere, 1)))
    stream.core.revoke({0, 1})
    stream.core.assign(frozenset({1}))
    assert table_key("a1", elsewhere) in stream.core.index
    assert len(stream.core.index) == 1
    stream.core.clocks[1].caught_up = True
    stream.clock.now_ms = T0 + TIMEOUT + GRACE - 1
    stream.core.expire(1)
    assert stream.sessions() == []
    stream.clock.now_ms = T0 + TIMEOUT + GRACE
    stream.core.expire(1)
    (end,) = stream.sessions()
    assert (end["device_id"], end["end_reason"]) == (elsewhere, "timeout")


def test_a_revoked_partition_forgets_its_devices_and_deadlines() -> None:
    here, elsewhere = device_on(0, 2), device_on(1, 2)
    stream = Stream(2, stored=table_of((here, 0), (elsewhere, 1)))
    stream.core.reindex(frozenset({0}))
    assert table_key("a1", here) in stream.core.index
    assert table_key("a1", elsewhere) not in stream.core.index
    assert stream.core.indexed == frozenset({0})
    stream.core.clocks[1].caught_up = True
    stream.clock.now_ms = T0 + 10 * TIMEOUT
    stream.core.expire(1)
    assert stream.sessions() == []


def test_a_reassigned_partition_starts_with_a_fresh_clock() -> None:
    stream = Stream()
    stream.send(launch("d1", T0), arrival=T0 + 5)
    stream.core.reindex(frozenset())
    stream.core.reindex(frozenset({0}))
    assert stream.core.clocks[0].newest_ms == 0


# Recovery


def test_rollback_puts_changed_devices_back_as_the_table_holds_them() -> None:
    stream = Stream()
    stream.send(launch("d1", T0))
    stream.commit()
    committed = stream.stored[table_key("a1", "d1")]
    stream.send(background("d1", T0 + SECOND), launch("d2", T0))
    stream.core.rollback()
    assert stream.core.devices[table_key("a1", "d1")] == DeviceEntry.from_value(
        committed, table_key("a1", "d1")
    )
    assert table_key("a1", "d2") not in stream.core.devices  # new since the commit: gone
    assert list(stream.core.changes()) == []


def test_rollback_forgets_the_positions_read_since_the_commit() -> None:
    stream = Stream()
    stream.send(launch("d1", T0))
    stream.commit()
    stream.send(screen_view("d1", T0 + 1), partition=0)
    assert stream.core.uncommitted == {("events.raw", 0): 2}
    stream.core.rollback()
    assert stream.core.uncommitted == {}
    assert ("events.raw", 0) not in stream.core.positions  # read from the committed offset
    assert stream.core.uncommitted_messages == 0


def test_rollback_winds_the_partition_clock_back_to_the_commit() -> None:
    stream = Stream()
    stream.send(launch("d1", T0), arrival=T0)
    stream.commit()
    stream.send(screen_view("d1", T0 + 1), arrival=T0 + TIMEOUT)
    stream.core.rollback()
    assert stream.core.clocks[0].newest_ms == T0


def test_replayed_after_a_rollback_the_same_records_come_out_again() -> None:
    stream = Stream()
    stream.send(launch("d1", T0))
    stream.commit()
    stream.sink.clear()
    stream.send(screen_view("d1", T0 + 1))
    first = stream.enriched()
    stream.core.rollback()
    stream.sink.clear()
    stream.offsets[("events.raw", 0)] = 1
    stream.send(screen_view("d1", T0 + 1) | {"event_id": first[0]["event_id"]})
    assert stream.enriched() == first
