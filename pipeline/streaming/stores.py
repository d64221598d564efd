"""Where the device table's values live: Faust's memory store, or its RocksDB store.

The streaming core reads and writes the table as a mapping of table key to value
(`StreamingCore.stored`). Faust's memory store is one already. Faust's RocksDB store keeps one
database per partition and finds a key's partition from the event being processed, which the
worker does not have (it applies whole fetches and writes its own changelog): `RocksTable` is
that store addressed by the device's partition instead, which the key tells. With it the worker
also tells the store how far each changelog partition is applied (`persist_offsets`), so that
a restart on the same disk reads only the changelog written since.

Per partition, RocksDB is given bounded memory (`ROCKSDB_OPTIONS`): what stays in the
process's memory does not grow with the number of devices.

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
# Per partition (Faust's defaults are 64 MiB x 3 memtables and a 2 GiB block cache each).
ROCKSDB_OPTIONS: Final = {
    "write_buffer_size": 16 * MIB,
    "max_write_buffer_number": 2,
    "target_file_size_base": 32 * MIB,
    "block_cache_size": 32 * MIB,
    "block_cache_compressed_size": 0,
    "bloom_filter_size": 10,
    "driver": "rocksdict",
}


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
