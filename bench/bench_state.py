"""Device-state benchmark (not a test): resident memory per device, and what an expiry tick costs.

One process holds N devices the way the streaming worker holds them with the memory store: a
`pipeline.streaming.core.StreamingCore` with the default config (or `--config`), its table
store a plain dict (Faust's memory store is one), a sink that checks each record's size against
the room of its topic (`RecordTooLarge`, as a topic would refuse it) and then drops it, counting,
and a fake wall clock. As in the worker's process, `pipeline.memory` keeps freed memory for reuse
and makes full garbage collections rare.

1. Each device lives one session: a launch, 2-6 screen views (40 % of users logged in), a
   background, then a terminate (a closed session) for all but `--open-share` of the devices,
   whose sessions stay open with their deadline booked. The messages are built here with orjson
   (not `pipeline.workload`, which cannot say which sessions stay open): UUID device and event
   ids, a device's events in uploads of up to `--batch` events, flushed at the background as
   SDKs do (`--batch 1`: one plain event per message), keyed by device id. Devices are fed on
   the partition their id hashes to, 10,000 at a time with their messages interleaved, in
   fetches of 500 records. Every `checkpoint_every` messages (and once at the end) a commit does
   what `pipeline/streaming/checkpoint.py` does: the checkpoint's own `write_changes` (each
   changed device serialized and written to the changelog), then `core.committed(saved)`.
2. Memory: RSS (/proc/self/statm) after gc.collect(), right before the first chunk of devices
   and after the last one; the growth divided by N is the number reported. Each chunk's input
   is freed before the next is built: the largest chunk's input (printed) bounds what input can
   leave behind. Also printed: the growth once malloc_trim(0) gave freed memory back (the
   baseline is trimmed too), and the size of the table's values.
3. Ticks: every arrival (Kafka timestamp) falls within a quarter of the session timeout, and the
   partition clocks are caught up at the newest arrival, so nothing is due. `core.expire` is
   timed over every partition, many times: first with the open share booked, then after every
   closed device opened a new session (all N booked, never committed: no effect on step 2).

    .venv/bin/python bench/bench_state.py                    # 1,000,000 devices (~10 GiB, ~17 min)
    .venv/bin/python bench/bench_state.py --devices 20000    # a quick smoke run

The last line is `rss_bytes_per_device=<integer>`: the RSS growth after gc.collect(), over N.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import hashlib
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import Config, load_config
from pipeline.kafka.topics import max_message_bytes
from pipeline.memory import collect_rarely, keep_freed_memory
from pipeline.sinks.kafka import Headers, RecordTooLarge, Refused, record_size
from pipeline.streaming.checkpoint import Checkpoint
from pipeline.streaming.codec import has_open_session
from pipeline.streaming.core import StreamingCore
from pipeline.streaming.partitioning import partition_for
from pipeline.streaming.stores import RocksTable, bound_memory, rocksdb_memory
from pipeline.testing import T0, FakeClock, FetchedRecord

DEVICES_PER_CHUNK = 10_000
MILESTONE_DEVICES = 1_000_000  # RSS is printed after each million devices fed too
FETCH_RECORDS = 500
TICKS = 500  # timed ticks per scenario, each `expire` on every partition
APPS = ("com.example.shop", "com.example.news", "com.example.game")
LOGGED_IN_SHARE = 0.4
INPUT_TOPIC = "events.raw"
REPARTITION_TOPIC = "sessionize-by-device"
CHANGELOG_TOPIC = "sessionize-devices-changelog"
GROUP_ID = "bench-state"

Upload = tuple[bytes, int, bytes]  # (key, arrival ms, message)


class DroppingSink:
    """Checks each record's size as its topic would, counts it and keeps nothing."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.records: Counter[str] = Counter()

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Count one record; RecordTooLarge if over the room."""
        size = record_size(key, value, headers)
        if size > self.room:
            raise RecordTooLarge(topic, size, self.room)
        self.records[topic] += 1

    def add_values(self, topic: str, key: bytes, values: list[bytes]) -> list[Refused]:
        """Count one record per value; returns those over the room, by position."""
        refused: list[Refused] = []
        for position, value in enumerate(values):
            try:
                self.add(topic, key, value)
            except RecordTooLarge as error:
                refused.append((position, error))
        return refused


def rss_bytes() -> int:
    """Resident set size of this process, after a full collection."""
    gc.collect()
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def give_back_freed_memory() -> bool:
    """malloc_trim(0): glibc returns the free memory of its heaps; False without glibc."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return False
    gc.collect()
    trim(0)
    return True


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def allocator_account() -> dict[str, int]:
    """Where the process's memory is, by allocator (bytes): glibc malloc's blocks in use, free
    in its arenas and mmapped (`mallinfo2`, glibc >= 2.33), Python's small-object allocator
    (arenas held, bytes in blocks in use: `sys._debugmallocstats`), and resident pages backed
    by files (shared libraries, memory-mapped files). Empty where these are not available."""
    account: dict[str, int] = {}
    name = ctypes.util.find_library("c")
    try:
        mallinfo2 = ctypes.CDLL(name).mallinfo2 if name else None
    except (OSError, AttributeError):
        mallinfo2 = None
    if mallinfo2 is not None:
        mallinfo2.restype = _MallInfo2
        info = mallinfo2()
        account["malloc in use"] = info.uordblks
        account["malloc free in its arenas"] = info.fordblks
        account["malloc mmapped blocks"] = info.hblkhd
    with tempfile.TemporaryFile() as stats:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(stats.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        stats.seek(0)
        text = stats.read().decode(errors="replace")
    for label, pattern in (
        ("pymalloc arenas", r"# arenas allocated current\s*=\s*([\d,]+)"),
        ("pymalloc blocks in use", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
    ):
        found = re.search(pattern, text)
        if found:
            account[label] = int(found.group(1).replace(",", ""))
    if "pymalloc arenas" in account:
        account["pymalloc arenas"] *= 1 << 20  # 1 MiB each (CPython 3.10+)
    file_backed = 0
    mapped_file = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            fields = line.split(maxsplit=5)
            mapped_file = len(fields) == 6 and fields[5].startswith("/")
        elif mapped_file and line.startswith("Rss:"):
            file_backed += int(line.split()[1]) * 1024
    account["resident, file-backed"] = file_backed
    return account


# The population


def uuid_text(bits: int) -> str:
    """128 bits written as an SDK writes a random UUID."""
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


def device_id(seed: int, index: int) -> tuple[str, float]:
    """Device `index`'s id and a uniform draw in [0, 1) that decides its session (the same
    for every run with `seed`, without keeping them)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=20).digest()
    return uuid_text(int.from_bytes(digest[:16])), int.from_bytes(digest[16:]) / 2**32


def uuid(rng: random.Random) -> str:
    """A random UUID drawn from `rng` (reproducible, unlike uuid4)."""
    return uuid_text(rng.getrandbits(128))


def uploads(
    rng: random.Random,
    device: str,
    app_id: str,
    kinds: list[str],
    gaps_ms: list[int],
    last_arrival_ms: int,
    batch: int,
) -> list[Upload]:
    """The messages of one stretch of a device's life: events of `kinds` `gaps_ms` apart, in
    uploads of up to `batch` events flushed at the background; the last arrives at
    `last_arrival_ms` (an upload arrives 0.1-2 s after its last event)."""
    user_id = uuid(rng) if rng.random() < LOGGED_IN_SHARE else None
    ts = last_arrival_ms - rng.randint(100, 2000) - sum(gaps_ms)
    groups: list[list[dict[str, Any]]] = [[]]
    for kind, gap in zip(kinds, gaps_ms, strict=True):
        ts += gap
        event: dict[str, Any] = {"event_id": uuid(rng), "type": kind, "ts": ts}
        if kind == "screen_view":
            event["name"] = f"screen_{rng.randint(1, 40)}"
        if len(groups[-1]) == batch:
            groups.append([])
        groups[-1].append(event)
        if kind == "app_background":
            groups.append([])
    key = device.encode()  # SDK producers key by device id
    messages: list[Upload] = []
    identity = {"app_id": app_id, "device_id": device}
    if user_id is not None:
        identity["user_id"] = user_id
    for events in filter(None, groups):
        arrival = events[-1]["ts"] + rng.randint(100, 2000)
        if batch == 1:
            messages.append((key, arrival, orjson.dumps({**events[0], **identity})))
        else:
            messages.append((key, arrival, orjson.dumps({**identity, "events": events})))
    shift = last_arrival_ms - messages[-1][1]  # (the random delays moved it a little)
    return [(key, arrival + shift, message) for key, arrival, message in messages]


def session(rng: random.Random, closed: bool) -> tuple[list[str], list[int]]:
    """A first session's event types and the gaps before each (ms)."""
    views = rng.randint(2, 6)
    kinds = ["app_launch", *["screen_view"] * views, "app_background"]
    gaps = [0, *[rng.randint(3_000, 40_000) for _ in range(views + 1)]]
    if closed:
        kinds.append("app_terminate")
        gaps.append(rng.randint(1_000, 20_000))
    return kinds, gaps


@dataclass(frozen=True)
class Population:
    """The devices and when their messages arrive (all within `window_ms` from T0)."""

    devices: int
    open_share: float
    batch: int
    seed: int
    window_ms: int

    def chunk(self, first: int, reopen: bool) -> Iterator[tuple[str, list[Upload]]]:
        """(device id, its messages) of devices `first` on, DEVICES_PER_CHUNK of them; with
        `reopen`, a new session (launch, screen view, background) of each closed device, one
        window later."""
        rng = random.Random(f"{self.seed}:{first}:{reopen}")
        for index in range(first, min(first + DEVICES_PER_CHUNK, self.devices)):
            device, draw = device_id(self.seed, index)
            is_open = draw < self.open_share
            if reopen and is_open:
                continue
            app_id = APPS[index % len(APPS)]
            arrival = T0 + self.window_ms * (index / self.devices + reopen)
            if reopen:
                kinds = ["app_launch", "screen_view", "app_background"]
                step = self.window_ms // 10  # the new session starts after the first ended
                gaps = [0, rng.randint(step // 2, step), rng.randint(step // 2, step)]
            else:
                kinds, gaps = session(rng, closed=not is_open)
            yield device, uploads(rng, device, app_id, kinds, gaps, int(arrival), self.batch)


# Feeding the core


@dataclass
class Feeder:
    """Feeds devices' messages to the core partition by partition, committing as the worker."""

    core: StreamingCore
    sink: DroppingSink
    checkpoint_every: int
    offsets: Counter[int]
    messages: int = 0
    largest_input: int = 0  # bytes of messages of the largest chunk
    milestones: list[tuple[int, int]] = field(default_factory=list)  # (devices fed, RSS)
    build_s: float = 0.0
    apply_s: float = 0.0
    commit_s: float = 0.0

    def feed(self, population: Population, reopen: bool = False, commit: bool = True) -> None:
        """Every device of `population` (or, with `reopen`, a new session of each closed one)."""
        partitions = self.core.partitions
        for first in range(0, population.devices, DEVICES_PER_CHUNK):
            started = time.perf_counter()
            per_partition: list[list[list[Upload]]] = [[] for _ in range(partitions)]
            for device, messages in population.chunk(first, reopen):
                per_partition[partition_for(device, partitions)].append(messages)
            fetches = [self._records(p, devices) for p, devices in enumerate(per_partition)]
            del per_partition
            self.largest_input = max(
                self.largest_input, sum(len(r.value or b"") for rs in fetches for r in rs)
            )
            self.build_s += time.perf_counter() - started
            for records in fetches:
                self._apply(records, commit)
            del fetches
            fed = min(first + DEVICES_PER_CHUNK, population.devices)
            if not reopen and fed % MILESTONE_DEVICES == 0 and fed < population.devices:
                self.milestones.append((fed, rss_bytes()))
        if commit:
            self.commit()

    def _records(self, partition: int, devices: list[list[Upload]]) -> list[FetchedRecord]:
        """The partition's records: the devices' messages interleaved, each device's in order."""
        records = []
        offset = self.offsets[partition]
        for row in zip_longest(*devices):
            for upload in row:
                if upload is not None:
                    key, arrival, value = upload
                    records.append(
                        FetchedRecord(INPUT_TOPIC, partition, offset, key, value, arrival)
                    )
                    offset += 1
        self.offsets[partition] = offset
        return records

    def _apply(self, records: list[FetchedRecord], commit: bool) -> None:
        core = self.core
        for start in range(0, len(records), FETCH_RECORDS):
            fetch = records[start : start + FETCH_RECORDS]
            began = time.perf_counter()
            core.apply((INPUT_TOPIC, fetch[0].partition), fetch, fetch[0].offset)
            self.apply_s += time.perf_counter() - began
            self.messages += len(fetch)
            if commit and core.uncommitted_messages >= self.checkpoint_every:
                self.commit()

    def commit(self) -> None:
        """What a checkpoint does to the core: changed devices to the changelog, committed."""
        began = time.perf_counter()
        checkpoint = Checkpoint(self.core, CHANGELOG_TOPIC, GROUP_ID, lambda offsets: None)
        saved, _ = checkpoint.write_changes(self.sink)  # type: ignore[arg-type]
        self.core.committed(saved)
        self.commit_s += time.perf_counter() - began


# Ticks


@dataclass(frozen=True)
class TickTimes:
    """Timed ticks with nothing due."""

    open_sessions: int  # devices with a session open
    booked: int  # bookings in the deadline index's heaps (stale ones included)
    per_call_ms: list[float]  # one `expire(partition)`
    per_tick_ms: list[float]  # `expire` on every partition, as `SessionWorker.on_tick` does


def time_ticks(core: StreamingCore, clock: FakeClock, sink: DroppingSink) -> TickTimes:
    """Time `expire` with the partitions caught up at the newest arrival; fails if anything
    was due (a record written, a booking gone)."""
    partitions = range(core.partitions)
    clock.now_ms = max(core.clocks[p].newest_ms for p in partitions)
    for partition in partitions:
        core.clocks[partition].caught_up = True
    decoded = core.devices
    open_sessions = sum(1 for d in decoded.values() if any(s.open for s in d.states)) + sum(
        1 for k, v in core.stored.items() if k not in decoded and has_open_session(v)
    )
    booked = core.index.entries
    live = len(core.index)
    written = sum(sink.records.values())
    per_call: list[float] = []
    per_tick: list[float] = []
    timer = time.perf_counter_ns
    for _ in range(TICKS):
        tick_started = timer()
        for partition in partitions:
            began = timer()
            core.expire(partition)
            per_call.append((timer() - began) / 1e6)
        per_tick.append((timer() - tick_started) / 1e6)
    if len(core.index) != live or sum(sink.records.values()) != written:
        raise RuntimeError("a session was due during the timed ticks: the window is too wide")
    return TickTimes(open_sessions, booked, per_call, per_tick)


# The benchmark


class LocalRocks:
    """What `RocksTable` needs of Faust's RocksDB store: a database per partition, opened
    with the worker's options (`pipeline.streaming.stores.bound_memory`)."""

    offset_key = b"__faust\x00offset__"

    def __init__(self, directory: Path, partitions: int, memory_mb: int) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        self._dbs: dict[int, Any] = {}
        bound_memory(self, memory_mb)
        self._dbs = {
            p: self.rocksdb_options.open(directory / f"devices-{p}.db") for p in range(partitions)
        }

    def _db_for_partition(self, partition: int) -> Any:
        return self._dbs[partition]


def ms(values: list[float]) -> str:
    """Median, 99th percentile and max of timings in ms."""
    p99 = statistics.quantiles(values, n=100)[98]
    return f"median {statistics.median(values):.4f}, p99 {p99:.4f}, max {max(values):.4f} ms"


def benchmark(args: argparse.Namespace) -> int:
    run_started = time.perf_counter()
    keep_freed_memory()  # as the worker's process does (pipeline.streaming.app)
    config: Config = load_config(args.config, env={})
    timeouts = [config.sessions.session_timeout_s]
    timeouts += [p.session_timeout_s for p in config.partners if p.session_timeout_s is not None]
    window_ms = int(min(timeouts) * 1000 / 4)  # twice this is still under every timeout
    clock = FakeClock(T0)
    partitions = config.topics.partitions
    stored: MutableMapping[bytes, bytes] = {}  # the memory store
    if args.store == "rocksdb":
        rocks = LocalRocks(Path(args.data_dir), partitions, config.worker.rocksdb_memory_mb)
        stored = RocksTable(rocks, partitions, "changelog")
    core = StreamingCore(config, partitions, REPARTITION_TOPIC, clock, stored)
    sink = DroppingSink(max_message_bytes(config))
    core.writer.sink = sink
    core.reindex(frozenset(range(partitions)))
    feeder = Feeder(core, sink, config.worker.checkpoint_every, Counter())
    population = Population(args.devices, args.open_share, args.batch, args.seed, window_ms)
    profiles = len(core.processor.new_states(APPS[0], "d"))
    print(
        f"{args.devices:,} devices, {args.open_share:.0%} with an open session, --batch "
        f"{args.batch}, seed {args.seed}; store {args.store}; {partitions} partitions, "
        f"{len(config.partners)} "
        f"partners, {profiles} state(s) per device, checkpoint every "
        f"{config.worker.checkpoint_every:,} messages; Python {sys.version.split()[0]}",
        flush=True,
    )
    collect_rarely()  # as the worker's process does
    trimmed = give_back_freed_memory()
    before = rss_bytes()
    account_before = allocator_account()
    feeder.feed(population)
    after = rss_bytes()
    account_after = allocator_account()
    growth = after - before
    trimmed_growth = rss_bytes() - before if trimmed and give_back_freed_memory() else None
    fed_s = feeder.build_s + feeder.apply_s + feeder.commit_s
    events = sink.records[config.topics.enriched]
    values = sum(len(v) for v in stored.values())
    rows = [
        ("devices held", f"{len(stored):,} table values", f"{len(core.devices):,} decoded"),
        (
            "fed",
            f"{feeder.messages:,} messages, {events:,} events",
            (
                f"{sum(sink.records.values()):,} records out; build {feeder.build_s:.1f} s, "
                f"apply {feeder.apply_s:.1f} s ({events / feeder.apply_s:,.0f} events/s), "
                f"commits {feeder.commit_s:.1f} s"
            ),
        ),
        *(
            (f"RSS after {fed:,} devices", f"{rss / 2**20:,.0f} MiB", "(growing, not committed)")
            for fed, rss in feeder.milestones
        ),
        ("RSS before -> after", f"{before / 2**20:,.0f} -> {after / 2**20:,.0f} MiB", ""),
        (
            "**RSS growth per device**",
            f"**{growth / args.devices:,.0f} B**",
            f"after gc.collect(); largest chunk's input {feeder.largest_input / 2**20:.1f} MiB",
        ),
    ]
    if trimmed_growth is not None:
        rows.append(
            ("RSS growth per device, trimmed", f"{trimmed_growth / args.devices:,.0f} B", "")
        )
    rows.append(
        ("table value per device (zstd of its JSON)", f"{values / max(len(stored), 1):,.0f} B", "")
    )
    if isinstance(stored, RocksTable):
        rocks = rocksdb_memory(stored.store)
        held = ", ".join(f"{name} {size / 2**20:,.1f} MiB" for name, size in rocks.items())
        total = rocks["block-cache-usage"] + rocks["estimate-table-readers-mem"]
        rows.append(
            (
                "RocksDB's memory, by its properties (cache, memtables in it, + table readers)",
                f"{total / 2**20:,.0f} MiB",
                held,
            )
        )
    for part, size in account_after.items():
        was = account_before.get(part, 0)
        rows.append(
            (f"allocator: {part}", f"{size / 2**20:,.1f} MiB", f"{(size - was) / 2**20:+,.1f} MiB")
        )
    share_ticks = time_ticks(core, clock, sink)
    feeder.feed(population, reopen=True, commit=False)
    all_ticks = time_ticks(core, clock, sink)
    for label, ticks in (("open share", share_ticks), ("all devices open", all_ticks)):
        rows.append(
            (
                f"tick, {label}: {ticks.open_sessions:,} open sessions, nothing due",
                ms(ticks.per_tick_ms),
                f"{ticks.booked:,} bookings; one partition's expire: {ms(ticks.per_call_ms)}",
            )
        )
    rows.append(("run", f"{time.perf_counter() - run_started:.1f} s", f"fed in {fed_s:.1f} s"))
    print("\n| measure | value | notes |")
    print("|---|---:|---|")
    for measure, value, notes in rows:
        print(f"| {measure} | {value} | {notes} |")
    print(f"rss_bytes_per_device={round(growth / args.devices)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--open-share", type=float, default=0.3, help="share of open sessions")
    parser.add_argument("--batch", type=int, default=20, help="events per message at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", type=Path, help="a config file (default: the defaults)")
    parser.add_argument("--store", choices=("memory", "rocksdb"), default="memory")
    parser.add_argument(
        "--data-dir", default="/tmp/bench_state_rocksdb", help="RocksDB's (emptied first)"
    )
    args = parser.parse_args()
    if args.devices < 1 or args.batch < 1 or not 0.0 <= args.open_share <= 1.0:
        parser.error("--devices and --batch must be >= 1, --open-share within [0, 1]")
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
