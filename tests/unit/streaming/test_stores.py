"""The RocksDB store's memory budget (`pipeline.streaming.stores.BoundedRocksDBOptions`): one
block cache for every partition's database, with the index and filter blocks and the memtables'
charge in it. Against real RocksDB databases (rocksdict), opened as the worker opens them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from faust.stores.rocksdb import RocksDBOptions

from pipeline.config import load_config
from pipeline.streaming.app import create_app
from pipeline.streaming.stores import (
    MIB,
    ROCKSDB_OPTIONS,
    BoundedRocksDBOptions,
    bound_memory,
    rocksdb_memory,
)

KEYS = 20_000


def fill(db: Any, first: int = 0) -> None:
    """Write KEYS keys (distinct values, as zstd'd states are), flush them to a table file and
    read every tenth back."""
    for i in range(first, first + KEYS):
        db.put(f"device-{i:08d}".encode(), f"{i:08d}".encode() * 30)
    db.flush()
    for i in range(first, first + KEYS, 10):
        assert db.get(f"device-{i:08d}".encode()) is not None


def prop(db: Any, name: str) -> int:
    value: int = db.property_int_value(f"rocksdb.{name}")
    return value


def test_the_worker_gives_its_rocksdb_store_the_configured_budget(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[kafka]\nbootstrap = "127.0.0.1:1"\n'
        f'[worker]\ninstance_id = "w"\nrocksdb_memory_mb = 48\ndata_dir = "{tmp_path}"\n'
    )
    _, worker = create_app(load_config(path, env={}), 2)

    store = worker.table.data
    options = store.rocksdb_options
    assert isinstance(options, BoundedRocksDBOptions)
    assert options.memory_bytes == 48 * MIB
    db = store._db_for_partition(1)  # opened as Faust opens it on an assignment
    assert prop(db, "block-cache-capacity") == 48 * MIB


def test_every_partitions_database_shares_the_one_cache(tmp_path: Path) -> None:
    options = BoundedRocksDBOptions(32 * MIB, **ROCKSDB_OPTIONS)
    first, second = (options.open(tmp_path / name) for name in ("p0.db", "p1.db"))

    fill(first)
    used_by_first = options.cache.get_usage()
    fill(second, first=KEYS)

    assert prop(first, "block-cache-capacity") == prop(second, "block-cache-capacity") == 32 * MIB
    assert options.cache.get_usage() > used_by_first > 0
    # Each database reports the same cache, the other's blocks included.
    assert prop(first, "block-cache-usage") == prop(second, "block-cache-usage")


def test_index_and_filter_blocks_are_held_in_the_cache_not_beside_it(tmp_path: Path) -> None:
    plain = RocksDBOptions(**{k: v for k, v in ROCKSDB_OPTIONS.items() if k != "driver"})
    plain.use_rocksdict = True
    unbounded = plain.open(tmp_path / "faust.db")
    bounded = BoundedRocksDBOptions(32 * MIB, **ROCKSDB_OPTIONS).open(tmp_path / "bounded.db")

    for db in (unbounded, bounded):
        fill(db)

    # A bloom filter of 10 bits per key is 25,000 bytes for these keys: Faust's options keep
    # it (and the index) beside the cache, the budget's in it (the reader's own object stays).
    assert prop(unbounded, "estimate-table-readers-mem") > KEYS * 10 // 8
    assert prop(bounded, "estimate-table-readers-mem") < 4096


def test_the_memtables_are_charged_to_the_cache(tmp_path: Path) -> None:
    options = BoundedRocksDBOptions(32 * MIB, **ROCKSDB_OPTIONS)
    db = options.open(tmp_path / "p0.db")

    for i in range(KEYS):  # written, not flushed, never read: only the memtable holds them
        db.put(f"device-{i:08d}".encode(), b"x" * 200)

    assert prop(db, "size-all-mem-tables") > 0
    assert options.cache.get_usage() >= prop(db, "cur-size-all-mem-tables")
    assert options.write_buffers.get_usage() > 0


def test_rocksdb_memory_counts_the_shared_cache_once(tmp_path: Path) -> None:
    class Store:
        _dbs: dict[int, Any] = {}

    store = Store()
    bound_memory(store, 32)
    store._dbs = {p: store.rocksdb_options.open(tmp_path / f"p{p}.db") for p in range(3)}  # type: ignore[attr-defined]
    for p, db in store._dbs.items():
        fill(db, first=p * KEYS)

    account = rocksdb_memory(store)

    assert account["block-cache-usage"] == store.rocksdb_options.cache.get_usage()  # type: ignore[attr-defined]
    assert account["block-cache-usage"] < sum(
        prop(db, "block-cache-usage") for db in store._dbs.values()
    )


def test_a_budget_cannot_be_given_once_databases_are_open(tmp_path: Path) -> None:
    class Store:
        _dbs = {0: object()}

    with pytest.raises(RuntimeError, match="open databases already"):
        bound_memory(Store(), 32)
