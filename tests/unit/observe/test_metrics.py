"""The worker's metrics count what a committed transaction carried, and nothing aborted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import Config, WorkerSettings
from pipeline.engine import SessionConfig
from pipeline.observe.metrics import WorkerMetrics, held_by
from pipeline.streaming.core import StreamingCore
from pipeline.streaming.stores import MIB, RocksTable, bound_memory
from pipeline.testing import (
    SECOND,
    T0,
    FakeClock,
    ListSink,
    background,
    fetched,
    launch,
    screen_view,
    terminate,
)

TIMEOUT = 60 * SECOND
GRACE = 2 * SECOND
INPUT = "events.raw"


class Observed:
    """A streaming core instrumented by WorkerMetrics, with a list sink and a fake clock."""

    def __init__(self) -> None:
        self.config = Config(
            sessions=SessionConfig(session_timeout_s=TIMEOUT / 1000),
            worker=WorkerSettings(grace_s=GRACE / 1000),
        )
        self.clock = FakeClock(T0)
        self.core = StreamingCore(self.config, 1, "by-device", self.clock)
        self.metrics = WorkerMetrics(self.config)
        self.metrics.instrument(self.core)
        self.sink = ListSink()
        self.core.writer.sink = self.sink
        self.core.reindex(frozenset({0}))
        self.offset = 0

    def send(self, *messages: object, arrival: int = T0) -> None:
        records = []
        for message in messages:
            assert isinstance(message, dict | bytes)
            records.append(fetched(self.offset, message, timestamp=arrival, topic=INPUT))
            self.offset += 1
        self.core.apply((INPUT, 0), records, records[0].offset)

    def commit(self) -> None:
        self.core.committed([(k, v) for k, _, v in self.core.changes()])
        self.metrics.committed()

    def rollback(self) -> None:
        self.core.rollback()
        self.metrics.rolled_back()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.metrics.text().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.samples().get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_committed_transaction_counts_events_duplicates_sessions_and_dead_letters() -> None:
    world = Observed()
    world.send(
        launch("d1", event_id="e1"),
        screen_view("d1", T0 + 1, event_id="e2"),
        screen_view("d1", T0 + 1, event_id="e2"),  # a duplicate
        terminate("d1", T0 + 2, event_id="e3"),
        b"{not json",
        launch("d2", event_id="f1"),
    )
    assert world.value("sessionize_events_applied_total") == 0  # nothing committed yet
    world.commit()
    assert world.value("sessionize_input_messages_total", topic=INPUT) == 6
    assert world.value("sessionize_events_applied_total") == 4
    assert world.value("sessionize_duplicates_total") == 1
    assert world.value("sessionize_sessions_started_total") == 2
    assert world.value("sessionize_sessions_ended_total", reason="terminate") == 1
    assert world.value("sessionize_dead_letters_total", reason="malformed_json") == 1


class Batch:
    def __init__(self, records: int) -> None:
        self.records = records

    def record_count(self) -> int:
        return self.records


class ShippingSink:
    """What `counting` needs of a TransactionalSink: the coroutine that ships one batch."""

    def __init__(self) -> None:
        self.shipped: list[tuple[str, int]] = []

    async def _ship(self, slot: tuple[str, int], builder: Batch) -> None:
        self.shipped.append(slot)


async def test_records_are_counted_per_topic_as_their_batches_ship() -> None:
    world = Observed()
    sink: Any = ShippingSink()
    assert world.metrics.counting(sink) is world.metrics.counting(sink)  # wrapped once
    await sink._ship(("sessions", 0), Batch(3))
    await sink._ship(("sessions", 1), Batch(2))
    await sink._ship(("partner.x", 0), Batch(7))
    assert world.value("sessionize_records_written_total", topic="sessions") == 0
    world.commit()
    assert sink.shipped == [("sessions", 0), ("sessions", 1), ("partner.x", 0)]
    assert world.value("sessionize_records_written_total", topic="sessions") == 5
    assert world.value("sessionize_records_written_total", topic="partner.x") == 7


def test_an_aborted_transaction_counts_nothing_and_its_replay_counts_once() -> None:
    world = Observed()
    world.send(launch("d1", event_id="e1"), launch("d1", event_id="e1"))
    world.rollback()
    world.offset = 0
    world.send(launch("d1", event_id="e1"), launch("d1", event_id="e1"))
    world.commit()
    assert world.value("sessionize_events_applied_total") == 1
    assert world.value("sessionize_duplicates_total") == 1
    assert world.value("sessionize_sessions_started_total") == 1
    assert world.value("sessionize_input_messages_total", topic=INPUT) == 2
    assert world.value("sessionize_rollbacks_total") == 1


def test_a_session_closed_by_the_timer_is_late_by_the_time_past_its_deadline() -> None:
    world = Observed()
    world.send(launch("d1", event_id="e1"), background("d1", T0 + 1, event_id="e2"))
    world.core.clocks[0].caught_up = True
    # Due at arrival + (deadline - latest event) + grace; the tick comes 500 ms after that.
    world.clock.now_ms = T0 + TIMEOUT + GRACE + 500
    world.core.expire(0)
    world.commit()
    assert world.value("sessionize_sessions_ended_total", reason="timeout") == 1
    assert world.value("sessionize_session_end_lateness_seconds_count") == 1
    assert world.value("sessionize_session_end_lateness_seconds_sum") == (GRACE + 500) / 1000


def test_devices_open_sessions_and_lag_are_read_at_each_scrape() -> None:
    world = Observed()
    world.send(launch("d1", event_id="e1"), launch("d2", event_id="f1"), arrival=T0)
    world.send(terminate("d2", T0 + 5, event_id="f2"), arrival=T0)
    world.commit()  # devices are counted as the table holds them
    world.metrics.watch(
        lambda: held_by(world.metrics, lambda tp: 10, [(INPUT, 0)], 1, lambda: T0 + 4 * SECOND)
    )
    assert world.value("sessionize_devices") == 2
    assert world.value("sessionize_open_sessions") == 1
    assert world.value("sessionize_partitions_assigned") == 1
    assert world.value("sessionize_input_lag_records", topic=INPUT, partition="0") == 7
    assert world.value("sessionize_input_lag_seconds", topic=INPUT, partition="0") == 4.0


def test_each_worker_has_a_registry_of_its_own() -> None:
    first, second = Observed(), Observed()
    first.send(launch("d1", event_id="e1"))
    first.commit()
    assert first.value("sessionize_events_applied_total") == 1
    assert second.value("sessionize_events_applied_total") == 0


def test_the_rocksdb_stores_memory_is_read_at_each_scrape(tmp_path: Path) -> None:
    class Store:  # what RocksTable needs of Faust's RocksDB store
        offset_key = b"__faust\x00offset__"
        _dbs: dict[int, Any] = {}

        def _db_for_partition(self, partition: int) -> Any:
            return self._dbs[partition]

    store = Store()
    bound_memory(store, 32)
    store._dbs = {0: store.rocksdb_options.open(tmp_path / "p0.db")}  # type: ignore[attr-defined]
    world = Observed()
    world.core.stored = RocksTable(store, 1, "changelog")
    for i in range(5000):  # a memtable's worth, charged to the cache
        world.core.stored[f'["app","d{i}"]'.encode()] = b"x" * 200
    world.metrics.watch(lambda: held_by(world.metrics, lambda tp: 0, [], 1, lambda: T0))

    def part(name: str) -> float:
        return world.value("sessionize_rocksdb_memory_bytes", part=name)

    assert part("budget") == 32 * MIB
    assert part("memtables") > 5000 * 200
    assert part("block_cache") >= part("memtables")
    assert part("table_readers") == 0  # nothing flushed to a table file yet


def test_the_memory_store_has_no_rocksdb_gauge() -> None:
    world = Observed()
    world.metrics.watch(lambda: held_by(world.metrics, lambda tp: 0, [], 1, lambda: T0))
    assert not [key for key in world.samples() if key[0].startswith("sessionize_rocksdb")]
