"""Where the device table's values live: Faust's memory store, or its RocksDB store.

The streaming core reads and writes the table as a mapping of table key to value
(`StreamingCore.stored`). Faust's memory store is one already. Faust's RocksDB store keeps one
database per partition and finds a key's partition from the event being processed, which the
worker does not have (it applies whole fetches and writes its own changelog): `RocksTable` is
that store addressed by the device's partition instead, which the key tells. With it the worker
also tells the store how far each changelog partition is applied (`persist_offsets`), so that
a restart on the same disk reads only the changelog written since.

RocksDB's memory is one budget for all the partitions' databases (`BoundedRocksDBOptions`,
`[worker] rocksdb_memory_mb`), as Kafka Streams' bounded-memory config does: one block cache,
shared by every database, holds the data blocks and the index and filter blocks too, and the
memtables are charged to it (a write buffer manager). So what RocksDB keeps in the process does
not grow with the number of devices, nor with the number of partitions a worker holds.

`apply_changelog` writes a run of changelog records to the table's store during recovery, as
Faust's recovery would (`pipeline.streaming.fetches`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from typing import Any, Final

import orjson
import rocksdict
from aiokafka.structs import ConsumerRecord
from faust.stores import rocksdb as faust_rocksdb
from faust.types import TP

from pipeline.config.settings import STORES
from pipeline.streaming.partitioning import partition_for

ROCKSDB, MEMORY = STORES

MIB = 1024 * 1024
# Per partition (Faust's defaults are 64 MiB x 3 memtables and a 2 GiB block cache each); the
# block cache Faust's options builder would make per database is replaced by the shared one.
ROCKSDB_OPTIONS: Final = {
    "write_buffer_size": 16 * MIB,
    "max_write_buffer_number": 2,
    "target_file_size_base": 32 * MIB,
    "block_cache_size": 1 * MIB,
    "block_cache_compressed_size": 0,
    "bloom_filter_size": 10,
    "driver": "rocksdict",
}
MEMTABLE_SHARE = 4  # the memtables may take up to a quarter of the budget
# What RocksDB reports of its memory (`rocksdb.<name>`). With the shared cache, every
# database reports the same cache, which holds the memtables' charge and the index and filter
# blocks as well; the table readers' own memory is then only what pinning leaves outside.
ROCKSDB_MEMORY: Final = ("block-cache-usage", "size-all-mem-tables", "estimate-table-readers-mem")


class BoundedRocksDBOptions(faust_rocksdb.RocksDBOptions):
    """Faust's RocksDB options (`ROCKSDB_OPTIONS`), with every database this worker opens in
    one memory budget of `memory_bytes`: one LRU block cache shared by all, holding index and
    filter blocks as well as data blocks (those of level 0 pinned: the newest files are read
    most), and a write buffer manager charging the memtables to that cache, a quarter of it at
    most (a flush starts before that).

    Without it, each partition's database had a cache of its own and kept its files' index
    and filter blocks outside any cache: 4.4 bytes per device more (BENCHMARKS.md)."""

    def __init__(self, memory_bytes: int, **options: Any) -> None:
        options = {k: v for k, v in options.items() if k != "driver"}
        super().__init__(**options, use_rocksdict=True)
        self.memory_bytes = memory_bytes
        self.cache = rocksdict.Cache(memory_bytes)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            memory_bytes // MEMTABLE_SHARE, False, self.cache
        )

    def as_options(self) -> Any:
        options = super().as_options()  # open files, memtables, file size, as Faust sets them
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        table.set_block_cache(self.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(self.write_buffers)
        return options


def bound_memory(store: Any, memory_mb: int) -> None:
    """Give Faust's RocksDB store `store` (a table's `data`) one memory budget for all its
    databases; before it opens any (it opens them as partitions are assigned)."""
    if getattr(store, "_dbs", None):
        raise RuntimeError("the RocksDB store has open databases already")
    store.rocksdb_options = BoundedRocksDBOptions(memory_mb * MIB, **ROCKSDB_OPTIONS)


def rocksdb_memory(store: Any) -> dict[str, int]:
    """RocksDB's own account of its memory (bytes): the shared block cache's usage (with the
    memtables' charge and the index and filter blocks in it), the memtables, and the table
    readers' memory outside the cache, summed over the open databases."""
    dbs = list(store._dbs.values())
    options = store.rocksdb_options
    account = {
        name: sum(db.property_int_value(f"rocksdb.{name}") or 0 for db in dbs)
        for name in ROCKSDB_MEMORY
    }
    if isinstance(options, BoundedRocksDBOptions):
        account["block-cache-usage"] = options.cache.get_usage()  # one cache, not one each
    return account


def store_url(store: str) -> str:
    """The Faust store URL of `[worker] store`."""
    return "rocksdb://" if store == ROCKSDB else "memory://"


class RocksTable(MutableMapping[bytes, bytes]):
    """The table in Faust's RocksDB store (`faust.stores.rocksdb.Store`), each key in the
    database of its device's partition."""

    def __init__(self, store: Any, partitions: int, changelog: str) -> None:
        self.store = store
        self.partitions = partitions
        self.changelog = changelog
        self._offset_key: bytes = store.offset_key

    def _db(self, key: bytes) -> Any:
        """The database of the device of `key`; KeyError for a key of no device."""
        try:
            device_id: str = orjson.loads(key)[1]
        except (orjson.JSONDecodeError, IndexError, TypeError):
            raise KeyError(key) from None
        return self.store._db_for_partition(partition_for(device_id, self.partitions))

    def get(self, key: bytes, default: Any = None) -> Any:
        try:
            value = self._db(key).get(key)
        except KeyError:
            return default
        return default if value is None else value

    def __getitem__(self, key: bytes) -> bytes:
        value: bytes | None = self._db(key).get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._db(key).put(key, value)

    def __delitem__(self, key: bytes) -> None:
        db = self._db(key)
        if db.get(key) is None:
            raise KeyError(key)
        db.delete(key)

    def pop(self, key: bytes, default: Any = None) -> Any:
        try:
            db = self._db(key)
        except KeyError:
            return default
        value = db.get(key)
        if value is None:
            return default
        db.delete(key)
        return value

    def _open(self) -> list[Any]:
        return list(self.store._dbs.values())  # the partitions this worker holds

    def __iter__(self) -> Iterator[bytes]:
        for db in self._open():
            for key in db.keys():  # noqa: SIM118 (an Rdict, not a dict)
                if key != self._offset_key:
                    yield key

    def items(self) -> Iterator[tuple[bytes, bytes]]:  # type: ignore[override]
        for db in self._open():
            for key, value in db.items():
                if key != self._offset_key:
                    yield key, value

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def persist_offsets(self, delivered: Iterable[Any]) -> None:
        """The changelog is applied up to these records (RecordMetadata of checkpoint markers
        written after a commit): a restart reads it from there."""
        for record in delivered:
            if record.partition in self.store._dbs:
                self.store.set_persisted_offset(TP(self.changelog, record.partition), record.offset)


def apply_changelog(table: Any, tp: TP, records: Sequence[ConsumerRecord]) -> None:
    """Apply changelog records of partition `tp`, in offset order, to the Faust table's store as
    Faust's recovery does (`Collection.apply_changelog_batch`): each value written, a tombstone
    (value None) deleting its key, then the store's persisted offset set to the last record's.

    Faust's RocksDB store (rocksdict) gets them as one WriteBatch written to the partition's
    database, as its own `apply_changelog_batch` writes one per partition, without building an
    event for each record; any other store through `apply_changelog_batch` itself."""
    store = table.data
    if isinstance(store, faust_rocksdb.Store) and store.use_rocksdict:
        batch = rocksdict.WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        for record in records:
            if record.value is None:
                delete(record.key)
            else:
                put(record.key, record.value)
        store._db_for_partition(tp.partition).write(batch)
        store.set_persisted_offset(tp, records[-1].offset)
    else:
        table.apply_changelog_batch([_Applied(tp, record) for record in records])


class _Applied:
    """A changelog record as Faust's stores read one in `apply_changelog_batch`: an event
    (`key`, `value`) and its message (`tp`, `partition`, `offset`, `key`, `value`), the
    bytes as they are (the table's key and value types are raw bytes)."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, tp: TP, record: ConsumerRecord) -> None:
        self.tp = tp
        self.partition = record.partition
        self.offset = record.offset
        self.key = record.key
        self.value = record.value

    @property
    def message(self) -> _Applied:
        return self
