"""The table's changelog applied a whole fetch at a time during Faust's recovery
(`FetchConsumer._apply_recovering`), against Faust's own recovery objects and stores: no broker.

What the bulk path relies on in Faust is pinned here: its `Recovery` (the partitions it recovers
as actives, their highwaters and read offsets, its buffers), the table's `apply_changelog_batch`
(the store's writes, tombstones and persisted offset), and the consumer's read offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from pipeline.config import load_config
from pipeline.streaming.app import create_app
from pipeline.streaming.codec import CHECKPOINT_KEY, table_key
from pipeline.streaming.fetches import FetchApp, FetchConsumer

PARTITIONS = 3
PARTITION = 1

STORES = ["rocksdb", "memory"]


@dataclass
class Worker:
    """The worker's Faust app (not started), its table and Faust's recovery of it."""

    app: FetchApp
    table: Any
    tp: TP

    @property
    def recovery(self) -> Any:
        return self.app.tables.recovery  # type: ignore[attr-defined]

    @property
    def consumer(self) -> FetchConsumer:
        consumer: FetchConsumer = self.app.consumer
        return consumer

    def recovering(self, highwater: int, applied: int = -1) -> None:
        """Faust's recovery started on the partition: read up to `applied` (-1: a new disk,
        as `_build_offsets` says for an empty store), waiting for `highwater`."""
        recovery = self.recovery
        recovery.add_active(self.table, self.tp)
        recovery.active_highwaters[self.tp] = highwater
        recovery.active_offsets[self.tp] = applied
        recovery._set_recovery_started()

    def contents(self) -> dict[bytes, bytes | None]:
        """The store's rows (Faust's offset key left out)."""
        store = self.table.data
        if hasattr(store, "_dbs"):
            db = store._db_for_partition(PARTITION)
            return {k: v for k, v in db.items() if k != store.offset_key}
        return dict(store.data)


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator[Any]:
    made = 0

    def make(store: str) -> Worker:
        nonlocal made
        made += 1
        directory = tmp_path / f"w{made}"
        directory.mkdir()
        path = directory / "config.toml"
        path.write_text(
            '[kafka]\nbootstrap = "127.0.0.1:1"\n'
            f'[worker]\napp_id = "t{made}"\ninstance_id = "w"\nstore = "{store}"\n'
            f'data_dir = "{directory}"\n'
        )
        app, worker = create_app(load_config(path, env={}), PARTITIONS)
        changelog = worker.table.changelog_topic.get_topic_name()
        return Worker(app, worker.table, TP(changelog, PARTITION))

    yield make


def key(device: str) -> bytes:
    return table_key("app", device)


def record(worker: Worker, offset: int, k: bytes, value: bytes | None) -> ConsumerRecord:
    size = -1 if value is None else len(value)
    return ConsumerRecord(
        worker.tp.topic, PARTITION, offset, 0, 0, k, value, None, len(k), size, []
    )


def changelog(worker: Worker) -> list[ConsumerRecord]:
    """Offsets 0-9 of a changelog partition: writes, an overwrite, a tombstone, markers."""
    rows: list[tuple[bytes, bytes | None]] = [
        (key("a"), b"a1"),
        (key("b"), b"b1"),
        (CHECKPOINT_KEY, b""),
        (key("a"), b"a2"),  # a device written again
        (key("c"), b"c1"),
        (key("b"), None),  # evicted: a tombstone
        (key("d"), b"d1"),
        (CHECKPOINT_KEY, b""),
        (key("e"), b"e1"),
        (CHECKPOINT_KEY, b""),  # the last record: what recovery waits for
    ]
    return [record(worker, offset, k, v) for offset, (k, v) in enumerate(rows)]


@pytest.mark.parametrize("store", STORES)
def test_a_recovering_fetch_is_written_at_once_and_its_highwater_record_left_to_faust(
    make_worker: Any, store: str
) -> None:
    worker = make_worker(store)
    records = changelog(worker)
    worker.recovering(highwater=9)

    left = worker.consumer._apply_recovering(worker.tp, records)

    assert [r.offset for r in left] == [9]
    assert worker.contents() == {
        key("a"): b"a2",
        CHECKPOINT_KEY: b"",
        key("c"): b"c1",
        key("d"): b"d1",
        key("e"): b"e1",
    }
    recovery = worker.recovery
    assert recovery.active_offsets[worker.tp] == 8
    assert recovery.active_remaining() == {worker.tp: 1}  # Faust's own count: one to go
    assert recovery.need_recovery()
    assert worker.consumer._read_offset[worker.tp] == 8
    if store == "rocksdb":  # a restart on this disk reads the changelog from there
        assert worker.table.persisted_offset(worker.tp) == 8


@pytest.mark.parametrize("store", STORES)
def test_the_table_is_the_one_faust_own_recovery_writes_from_the_same_records(
    make_worker: Any, store: str
) -> None:
    bulk, own = make_worker(store), make_worker(store)
    bulk.recovering(highwater=10)
    left = bulk.consumer._apply_recovering(bulk.tp, changelog(bulk))
    assert left == []
    own.recovering(highwater=10)

    async def faust_events() -> list[Any]:
        # As Faust's conductor does for the changelog: its message, decoded by the topic.
        topic = own.table.changelog_topic
        return [
            await topic.decode(own.consumer._to_message(own.tp, r), propagate=True)
            for r in changelog(own)
        ]

    own.table.apply_changelog_batch(asyncio.run(faust_events()))  # what its buffer flush does

    assert bulk.contents() == own.contents()
    assert key("b") not in bulk.contents()
    if store == "rocksdb":
        assert bulk.table.persisted_offset(bulk.tp) == own.table.persisted_offset(own.tp) == 9


@pytest.mark.parametrize("store", STORES)
def test_records_faust_has_applied_already_are_not_applied_again(
    make_worker: Any, store: str
) -> None:
    worker = make_worker(store)
    records = changelog(worker)
    worker.recovering(highwater=9, applied=4)  # the store's persisted offset: a same-disk restart

    left = worker.consumer._apply_recovering(worker.tp, records[3:])

    assert [r.offset for r in left] == [9]
    assert worker.contents() == {CHECKPOINT_KEY: b"", key("d"): b"d1", key("e"): b"e1"}


@pytest.mark.parametrize("store", STORES)
def test_fetches_one_after_the_other_end_with_the_highwater_record_for_faust(
    make_worker: Any, store: str
) -> None:
    worker = make_worker(store)
    records = changelog(worker)
    worker.recovering(highwater=9)
    consumer = worker.consumer

    assert consumer._apply_recovering(worker.tp, records[:4]) == []
    assert consumer._apply_recovering(worker.tp, records[4:7]) == []
    assert worker.recovery.active_remaining() == {worker.tp: 3}
    left = consumer._apply_recovering(worker.tp, records[7:])

    assert [r.offset for r in left] == [9]
    assert worker.recovery.active_offsets[worker.tp] == 8
    assert worker.contents()[key("a")] == b"a2"
    assert key("b") not in worker.contents()


@pytest.mark.parametrize("store", STORES)
def test_what_faust_holds_of_the_partition_is_written_before_the_fetch(
    make_worker: Any, store: str
) -> None:
    # A record Faust read on its own path (in its buffer, not yet applied), then a fetch
    # overwriting its device: the fetch must win, as offset order says.
    worker = make_worker(store)
    records = changelog(worker)
    worker.recovering(highwater=9)
    consumer = worker.consumer

    async def buffered(r: ConsumerRecord) -> Any:
        return await worker.table.changelog_topic.decode(
            consumer._to_message(worker.tp, r), propagate=True
        )

    worker.recovery.buffers[worker.table].append(asyncio.run(buffered(records[0])))
    worker.recovery.active_offsets[worker.tp] = 0
    consumer._read_offset[worker.tp] = 0
    consumer._apply_recovering(worker.tp, [record(worker, 1, key("a"), b"a-new")])
    worker.recovery.flush_buffers()  # as Faust does when its recovery ends

    assert worker.contents()[key("a")] == b"a-new"


@pytest.mark.parametrize("store", STORES)
def test_faust_own_path_keeps_the_records_when_it_still_has_some_of_the_partition_to_apply(
    make_worker: Any, store: str
) -> None:
    worker = make_worker(store)
    records = changelog(worker)
    worker.recovering(highwater=9)
    worker.consumer._read_offset[worker.tp] = 2  # delivered to Faust's queue, not read by it yet

    assert worker.consumer._apply_recovering(worker.tp, records[3:]) == records[3:]
    assert worker.contents() == {}
    assert worker.recovery.active_offsets[worker.tp] == -1


@pytest.mark.parametrize("store", STORES)
def test_outside_an_active_recovery_every_record_goes_faust_own_way(
    make_worker: Any, store: str
) -> None:
    worker = make_worker(store)
    records = changelog(worker)
    consumer = worker.consumer

    assert consumer._apply_recovering(worker.tp, records) == records  # no recovery running

    worker.recovery.add_standby(worker.table, worker.tp)
    worker.recovery.standby_highwaters[worker.tp] = 9
    worker.recovery._set_recovery_started()
    assert consumer._apply_recovering(worker.tp, records) == records  # a standby

    worker.recovering(highwater=9)
    worker.recovery._set_recovery_ended()
    assert consumer._apply_recovering(worker.tp, records) == records  # it has ended
    assert worker.contents() == {}
