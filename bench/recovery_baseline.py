"""The in-process part of bench/bench_recovery.py: the changelog read without Faust, and the cost
of `StreamingCore.assign` (the scan that books open sessions) over what was read.

A plain aiokafka consumer (read_committed, fetches of up to 20,000 records) reads every
changelog partition to its end, and writes each fetch to one rocksdict database per partition
(opened as the worker's store opens them: Faust's RocksDB options with `ROCKSDB_OPTIONS`) as one
WriteBatch (what the worker's recovery does per fetch, `stores.apply_changelog`), or into a dict
(the memory store). That is the rate the changelog can be read at in Python here; the worker's
own recovery is measured against it. The time spent in the databases' `write` and the process's
CPU seconds are shown too.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import rocksdict
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores.rocksdb import RocksDBOptions

from pipeline.config import Config
from pipeline.kafka.topics import changelog_topic
from pipeline.streaming.core import StreamingCore
from pipeline.streaming.stores import ROCKSDB_OPTIONS, RocksTable
from pipeline.testing import T0, FakeClock

STALL_S = 30.0


class Databases:
    """The part of Faust's RocksDB store `RocksTable` uses: one database per partition."""

    offset_key = b"__faust\0offset__"

    def __init__(self, directory: Path, partitions: int) -> None:
        options = {k: v for k, v in ROCKSDB_OPTIONS.items() if k != "driver"}
        opener = RocksDBOptions(**options, use_rocksdict=True)
        self._dbs = {p: opener.open(directory / f"{p}.db") for p in range(partitions)}
        self.write_s = 0.0  # spent in the databases' write

    def _db_for_partition(self, partition: int) -> Any:
        return self._dbs[partition]

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()


async def plain_read(config: Config, sink: Databases | dict[bytes, bytes]) -> tuple[int, float]:
    """Read the whole changelog with one aiokafka consumer (read_committed, getmany), each
    fetch written to `sink` (a RocksDB WriteBatch per partition): (records, seconds)."""
    changelog = changelog_topic(config)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.kafka.bootstrap,
        isolation_level="read_committed",
        # (seek_to_beginning and getmany(*partitions), with larger or default fetch sizes,
        # gave only empty fetches in some runs; seek(tp, 0) and a plain getmany did not; the
        # cause was not looked into)
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(changelog, p) for p in range(config.topics.partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        began = time.perf_counter()
        records = 0
        left = {tp for tp in tps if ends[tp] > 0}
        seen = time.perf_counter()
        while left:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            if fetched:
                seen = time.perf_counter()
            elif time.perf_counter() - seen > STALL_S:
                raise RuntimeError(f"the plain reader got nothing for {STALL_S} s")
            for tp, batch in fetched.items():
                if tp not in left:
                    continue
                records += len(batch)
                if isinstance(sink, dict):
                    sink.update((r.key, r.value) for r in batch if r.key and r.value)
                else:
                    writes = rocksdict.WriteBatch(raw_mode=True)
                    for r in batch:
                        if r.value is None:
                            writes.delete(r.key)
                        else:
                            writes.put(r.key, r.value)
                    began_write = time.perf_counter()
                    sink._db_for_partition(tp.partition).write(writes)
                    sink.write_s += time.perf_counter() - began_write
            for tp in list(left):  # (the last offsets may be transaction markers)
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        return records, time.perf_counter() - began
    finally:
        await consumer.stop()


def timed_assign(config: Config, stored: Any) -> tuple[float, int]:
    """`StreamingCore.assign` of every partition over `stored`: (seconds, devices booked)."""
    partitions = config.topics.partitions
    core = StreamingCore(config, partitions, "bench-by-device", FakeClock(T0), stored)
    began = time.perf_counter()
    core.assign(frozenset(range(partitions)))
    return time.perf_counter() - began, len(core.index)


def in_process(config: Config, directory: Path) -> list[str]:
    """Rows: the plain reader into RocksDB and into a dict, `assign` over each."""
    rows = []
    databases = Databases(directory, config.topics.partitions)
    try:
        cpu = time.process_time()
        records, seconds = asyncio.run(asyncio.wait_for(plain_read(config, databases), 300))
        cpu = time.process_time() - cpu
        table = RocksTable(databases, config.topics.partitions, changelog_topic(config))
        assign_s, booked = timed_assign(config, table)
    finally:
        databases.close()
    rows.append(
        f"| plain aiokafka reader -> rocksdict WriteBatch per fetch (the worker's options) | "
        f"{records:,} records in {seconds:.1f} s: {records / seconds:,.0f}/s, "
        f"{databases.write_s:.1f} s of it in write; {cpu:.1f} CPU s | `assign` over it: "
        f"{assign_s:.1f} s, {booked:,} open sessions booked |"
    )
    stored: dict[bytes, bytes] = {}
    cpu = time.process_time()
    records, seconds = asyncio.run(asyncio.wait_for(plain_read(config, stored), 300))
    cpu = time.process_time() - cpu
    assign_s, booked = timed_assign(config, stored)
    rows.append(
        f"| plain aiokafka reader -> dict | {records:,} records in {seconds:.1f} s: "
        f"{records / seconds:,.0f}/s; {cpu:.1f} CPU s | `assign` over it: {assign_s:.1f} s, "
        f"{booked:,} booked |"
    )
    return rows
