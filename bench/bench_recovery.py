"""Recovery benchmark (not a test): how fast a worker gets back N device states from its changelog.

One local broker (started in a temp dir by `pipeline.kafka.local.start`, unless
`KAFKA_BOOTSTRAP` names one), one config of its own (fresh topic names and app id, 4 partitions,
no partners, `[sessions] session_timeout_s = 86400` so that no open session falls due while the
benchmark runs: an expiry burst would be measured as recovery otherwise):

1. Device states: bench_state's population (UUID ids, 30 % of sessions left open) is fed through
   a `StreamingCore` for `--templates` devices; each of the N states written is one of those
   entries with every UUID in it (device, session and event ids) drawn afresh, its times moved
   to now, and its partition the new device id's (`partition_for`), encoded by
   `DeviceEntry.to_value`, keyed by `table_key(app_id, device_id)`.
2. They are produced straight into the table's changelog (created by `prepare_worker_topics`),
   one aiokafka producer, 1 MiB batches, no compression; each changelog partition is then ended
   as the worker ends it (`write_checkpoint_markers`). The input topic stays empty.
3. Each round, one after the other (so the figures of a round were measured side by side):
   a. `sessionize worker` (a subprocess), RocksDB store, new data_dir: time from process start
      to GET /ready 200. The endpoint is polled every 50 ms, and its `waiting_for` says the
      phase: "recovery" runs from the first answer that names the table's recovery to the
      first that does not (Faust reading the changelog, rebalance included); "index" from then
      to ready (`StreamingCore.assign`: the scan of the table that books open sessions).
      states/s = N / recovery (and N / total, start to ready). The worker's CPU time (user +
      system, all its threads, /proc/<pid>/stat) is read at each phase change too: "recovery
      CPU s" is what it spent over the recovery phase (as much as its wall time: one core
      busy throughout).
   b. SIGTERM, then the worker again on the same data_dir: time to ready, and to serving: one
      event produced once it is ready, until its enriched record is on the enriched topic
      (read_committed); time to serving counts from process start. Then SIGKILL, and again.
   c. the memory store, new data_dir: time to ready (it reads the whole changelog each start).
   VmRSS of the worker is read once it is ready (and VmHWM, its peak).
4. After the rounds, in this process (`recovery_baseline.py`, skipped with --skip-plain): the
   changelog read by a plain aiokafka consumer into RocksDB and into a dict, the Python bound
   for recovery here, and `StreamingCore.assign` timed over each, alone.

    .venv/bin/python bench/bench_recovery.py                      # 1,000,000 states, 2 rounds
    .venv/bin/python bench/bench_recovery.py --states 20000 --rounds 1   # a quick smoke run
    .venv/bin/python bench/bench_recovery.py --profile /tmp/rec.prof
        # ... and a last new-disk RocksDB run under cProfile, its top functions printed
    KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python bench/bench_recovery.py --reuse NAME
        # the changelog an earlier run on that broker filled (its first line names it)
    .venv/bin/python bench/bench_recovery.py --baseline /tmp/old
        # each round also with the worker of another checkout (`git archive REV | tar -x -C
        # /tmp/old`; run by this venv's python from there), the two in turn, order alternating

Wall-clock numbers move with whatever else runs on the machine (2 shared cores here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import pstats
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_state
from bench_worker import broker  # $KAFKA_BOOTSTRAP, or a broker of its own
from recovery_baseline import in_process

from pipeline.config import Config, load_config
from pipeline.engine import SessionRules
from pipeline.kafka.topics import (
    changelog_max_message_bytes,
    changelog_topic,
    max_message_bytes,
    prepare_worker_topics,
)
from pipeline.streaming.codec import DeviceEntry, has_open_session, table_key
from pipeline.streaming.core import StreamingCore
from pipeline.streaming.partitioning import partition_for
from pipeline.streaming.recovery import write_checkpoint_markers
from pipeline.testing import T0, FakeClock

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 86_400
POLL_S = 0.05
READY_TIMEOUT_S = 600.0
SERVE_TIMEOUT_S = 120.0
CHUNK = 50_000  # states generated per task
UUID = rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
STAMP = rb"(?<![0-9])17[0-9]{11}(?![0-9])"  # ms timestamps around T0 (2026)
VARIABLE = re.compile(rb"(" + UUID + rb")|(" + STAMP + rb")")


# The states


def templates(config: Config, count: int, open_share: float) -> list[tuple[bytes, bytes]]:
    """(key, JSON) of `count` devices fed through the streaming core (bench_state's)."""
    partitions = config.topics.partitions
    stored: dict[bytes, bytes] = {}
    core = StreamingCore(config, partitions, "bench-by-device", FakeClock(T0), stored)
    sink = bench_state.DroppingSink(max_message_bytes(config))
    core.writer.sink = sink
    core.reindex(frozenset(range(partitions)))
    feeder = bench_state.Feeder(core, sink, config.worker.checkpoint_every, Counter())
    feeder.feed(bench_state.Population(count, open_share, 20, 1, TIMEOUT_S * 1000 // 4))
    return [(k, DeviceEntry.from_value(v, k).to_json()) for k, v in stored.items()]


@dataclass(frozen=True)
class StateMaker:
    """Makes state `index` of N from the templates (picklable: runs in a pool)."""

    app_ids: list[str]
    bodies: list[bytes]  # each template's JSON after its partition field
    partitions: int
    shift_ms: int  # added to every timestamp
    rules: SessionRules  # for the deadline of a value's header (one profile: no partner kit)

    def chunk(self, bounds: tuple[int, int]) -> list[tuple[int, bytes, bytes]]:
        first, last = bounds
        rng = random.Random(first)
        shift = self.shift_ms
        out = []
        for index in range(first, last):
            device, _ = bench_state.device_id(7, index)
            fresh: dict[bytes, bytes] = {}

            def swap(match: re.Match[bytes], fresh: dict[bytes, bytes] = fresh) -> bytes:
                if match[1] is not None:  # the same UUID twice stays the same in one device
                    if match[1] not in fresh:
                        fresh[match[1]] = bench_state.uuid(rng).encode()
                    return fresh[match[1]]
                return b"%d" % (int(match[2]) + shift)

            t = index % len(self.bodies)
            partition = partition_for(device, self.partitions)
            document = b'{"partition":%d' % partition + VARIABLE.sub(swap, self.bodies[t])
            key = table_key(self.app_ids[t], device)
            entry = DeviceEntry.from_value(document, key)
            value = entry.to_value(self.rules.deadline(entry.states[0]))
            out.append((partition, key, value))
        return out


def make_states(config: Config, n: int, count: int, open_share: float) -> Iterator[list[Any]]:
    """The N (partition, key, value) states, in chunks, made by 2 processes."""
    made = templates(config, count, open_share)
    newest = max(orjson.loads(body)["arrival_ms"] for _, body in made)
    heads = re.compile(rb'^\{"partition":[0-9]+')
    maker = StateMaker(
        [orjson.loads(k)[0] for k, _ in made],
        [heads.sub(b"", body) for _, body in made],
        config.topics.partitions,
        int(time.time() * 1000) - newest,
        SessionRules(config.sessions),
    )
    bounds = [(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        yield from pool.imap(maker.chunk, bounds)


async def fill(config: Config, states: Iterator[list[Any]]) -> tuple[int, int, int, float]:
    """Produce the states to the changelog, end each partition with a marker: (states, open,
    bytes, seconds spent producing)."""
    changelog = changelog_topic(config)
    producer = AIOKafkaProducer(
        bootstrap_servers=config.kafka.bootstrap,
        linger_ms=50,
        max_batch_size=1024 * 1024,
        max_request_size=changelog_max_message_bytes(config),
    )
    await producer.start()
    count = opened = size = 0
    sending = 0.0
    try:
        for chunk in states:
            began = time.perf_counter()
            for partition, key, value in chunk:
                await producer.send(changelog, value, key=key, partition=partition)
                opened += has_open_session(value)
                size += len(value)
            count += len(chunk)
            sending += time.perf_counter() - began
        began = time.perf_counter()
        await producer.flush()
        partitions = range(config.topics.partitions)
        await asyncio.gather(*await write_checkpoint_markers(producer, changelog, partitions))
        sending += time.perf_counter() - began
    finally:
        await producer.stop()
    return count, opened, size, sending


# The worker


def write_config(directory: Path, bootstrap: str, name: str, store: str, data_dir: Path) -> Path:
    path = directory / f"config-{store}-{data_dir.name}.toml"
    lines = [
        "partners = []",
        "[kafka]",
        f'bootstrap = "{bootstrap}"',
        "[topics]",
        f'input = "{name}.raw"',
        f'sessions = "{name}.sessions"',
        f'enriched = "{name}.enriched"',
        f'deadletter = "{name}.deadletter"',
        "partitions = 4",
        "[sessions]",
        f"session_timeout_s = {TIMEOUT_S}",
        "[worker]",
        f'app_id = "{name}"',
        f'data_dir = "{data_dir}"',
        'instance_id = "bench"',
        f'store = "{store}"',
        "web_port = 0",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process has used; 0 once it is gone."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def proc_status(pid: int, field_name: str) -> int:
    """A KiB figure of /proc/<pid>/status (VmRSS, VmHWM); 0 once the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class Run:
    """One start of the worker and what was seen of it."""

    label: str
    config_path: Path
    log_path: Path
    profile: Path | None = None
    repo: Path = REPO  # the checkout whose worker runs
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    url: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # first time each waiting_for seen
    phases_cpu: dict[str, float] = field(default_factory=dict)  # the worker's CPU s then
    ready_cpu_s: float = 0.0
    ready_s: float = 0.0
    serving_s: float = 0.0
    rss_kib: int = 0
    hwm_kib: int = 0

    def start(self) -> None:
        profiler = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        command = [sys.executable, *profiler, "-m", "pipeline", "worker"]
        command += ["--config", str(self.config_path), "--log-format", "json"]
        self.started = time.perf_counter()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, cwd=self.repo)

    def since(self) -> float:
        return time.perf_counter() - self.started

    def wait_ready(self) -> None:
        """Poll the start-up line for the address, then /ready until 200."""
        assert self.process is not None
        while self.since() < READY_TIMEOUT_S:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label}: the worker exited; see {self.log_path}")
            if not self.url:
                self.url = self._web_url()
            elif self._ready():
                self.ready_s = self.since()
                self.ready_cpu_s = proc_cpu_s(self.process.pid)
                self.rss_kib = proc_status(self.process.pid, "VmRSS")
                self.hwm_kib = proc_status(self.process.pid, "VmHWM")
                return
            time.sleep(POLL_S)
        raise RuntimeError(f"{self.label}: not ready after {READY_TIMEOUT_S} s")

    def _web_url(self) -> str:
        for line in self.log_path.read_bytes().splitlines()[-200:]:
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = orjson.loads(line)
                if isinstance(entry, dict) and entry.get("event") == "start" and entry.get("web"):
                    return str(entry["web"])
        return ""

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except urllib.error.HTTPError as refused:
            self._seen(json.loads(refused.read()).get("waiting_for", "?"))
        except (urllib.error.URLError, OSError):
            self._seen("(no answer)")
        return False

    def _seen(self, waiting: str) -> None:
        if waiting not in self.phases:
            self.phases[waiting] = self.since()
            assert self.process is not None
            self.phases_cpu[waiting] = proc_cpu_s(self.process.pid)

    def _recovery(self, times: dict[str, float], ready: float) -> float:
        # From the first answer naming the table's recovery to the first after it.
        ordered = sorted(self.phases.items(), key=lambda item: item[1])
        begin = next((w for w, _ in ordered if "recovery" in w), None)
        if begin is None:
            return 0.0
        after = [w for w, t in ordered if t > self.phases[begin] and "recovery" not in w]
        return (times[after[0]] if after else ready) - times[begin]

    def recovery_s(self) -> float:
        """From the first answer naming the table's recovery to the first after it."""
        return self._recovery(self.phases, self.ready_s)

    def recovery_cpu_s(self) -> float:
        """The worker's CPU seconds over `recovery_s`."""
        return self._recovery(self.phases_cpu, self.ready_cpu_s)

    def index_s(self) -> float:
        indexing = self.phases.get("the recovered devices to be indexed")
        return self.ready_s - indexing if indexing is not None else 0.0

    def stop(self, how: signal.Signals) -> float:
        """Signal the worker and wait for it to exit: seconds it took."""
        assert self.process is not None
        began = time.perf_counter()
        self.process.send_signal(how)
        self.process.wait(timeout=300)
        return time.perf_counter() - began


async def serve_one(config: Config, run: Run) -> None:
    """Produce one event once the worker is ready; time until its enriched record is seen."""
    enriched = config.topics.enriched
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.kafka.bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap)
    await producer.start()
    try:
        tps = [TopicPartition(enriched, p) for p in range(config.topics.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        device, event_id = bench_state.uuid(random.Random()), bench_state.uuid(random.Random())
        event = {"event_id": event_id, "type": "app_launch", "ts": int(time.time() * 1000)}
        event |= {"app_id": "com.example.shop", "device_id": device}
        await producer.send_and_wait(config.topics.input, orjson.dumps(event), key=device.encode())
        needle = event_id.encode()
        while run.since() < run.ready_s + SERVE_TIMEOUT_S:
            batches = await consumer.getmany(timeout_ms=100)
            if any(needle in (r.value or b"") for rs in batches.values() for r in rs):
                run.serving_s = run.since()
                return
        raise RuntimeError(f"{run.label}: no enriched record after {SERVE_TIMEOUT_S} s")
    finally:
        await producer.stop()
        await consumer.stop()


# The benchmark


def row(run: Run, states: int, note: str = "", full: bool = True) -> str:
    """A line of the results table; `full`: the run read the whole changelog (else no rates)."""
    rate = f"{states / run.recovery_s():,.0f}" if full and run.recovery_s() else ""
    total = f"{states / run.ready_s:,.0f}" if full else ""
    serving = f"{run.serving_s:.1f}" if run.serving_s else ""
    return (
        f"| {run.label} | {run.ready_s:.1f} | {run.recovery_s():.1f} "
        f"| {run.recovery_cpu_s():.1f} | {run.index_s():.1f} "
        f"| {rate} | {total} | {serving} | {run.rss_kib / 1024:,.0f} "
        f"| {run.hwm_kib / 1024:,.0f} | {note} |"
    )


def measured(run: Run, config: Config, serve: bool = True) -> Run:
    run.start()
    run.wait_ready()
    if serve:
        asyncio.run(serve_one(config, run))
    print(f"{run.label}: ready {run.ready_s:.1f} s, phases {run.phases}", flush=True)
    return run


def one_round(
    args: argparse.Namespace,
    config: Config,
    here: Path,
    boot: str,
    name: str,
    count: int,
    r: str,
    tag: str,
    repo: Path,
) -> list[str]:
    """The rows of one round with the worker of checkout `repo`."""
    rows = []
    where = repo.name if tag else ""
    rocks = write_config(here, boot, name, "rocksdb", here / f"rocks-{r}{where}")
    log = here / f"{r}{where}"
    first = measured(Run(f"{r}a. RocksDB, new disk{tag}", rocks, log / "a.log", repo=repo), config)
    term_s = first.stop(signal.SIGTERM)
    rows.append(row(first, count, f"then SIGTERM: exited in {term_s:.1f} s"))
    label = f"{r}b. RocksDB, same disk, after SIGTERM{tag}"
    again = measured(Run(label, rocks, log / "b-term.log", repo=repo), config)
    again.stop(signal.SIGKILL)
    rows.append(row(again, count, "then SIGKILL", full=False))
    label = f"{r}b. RocksDB, same disk, after SIGKILL{tag}"
    killed = measured(Run(label, rocks, log / "b-kill.log", repo=repo), config)
    killed.stop(signal.SIGTERM)
    rows.append(row(killed, count, full=False))
    if not args.skip_memory:
        memory = write_config(here, boot, name, "memory", here / f"memory-{r}{where}")
        label = f"{r}c. memory store{tag}"
        run = measured(Run(label, memory, log / "c.log", repo=repo), config)
        run.stop(signal.SIGTERM)
        rows.append(row(run, count))
    return rows


def benchmark(args: argparse.Namespace) -> None:
    name = args.reuse or f"bench-recovery-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    print(f"{args.states:,} states, {args.rounds} round(s); load {os.getloadavg()[0]:.2f}")
    print(f"topics and app id: {name}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as temp, broker(Path(temp)) as boot:
        here = Path(temp)
        config = load_config(write_config(here, boot, name, "rocksdb", here / "fill"), env={})
        if args.reuse:
            count = args.states  # (what the earlier run filled it with: --states must say)
        else:
            asyncio.run(prepare_worker_topics(config))
            began = time.perf_counter()
            states = make_states(config, args.states, args.templates, args.open_share)
            count, opened, size, sending = asyncio.run(fill(config, states))
            print(
                f"filled {count:,} states ({opened:,} open, {size / count:,.0f} B each) in "
                f"{time.perf_counter() - began:.1f} s ({sending:.1f} s producing)",
                flush=True,
            )
        rows = []
        trees = [("", REPO)]
        if args.baseline:
            trees.append((" (baseline)", args.baseline.resolve()))
        for r in range(1, args.rounds + 1):
            for tag, repo in trees if r % 2 else trees[::-1]:  # each round in the other order
                rows += one_round(args, config, here, boot, name, count, f"{r}", tag, repo)
        plain = []
        if not args.skip_plain:
            try:
                plain = in_process(config, here / "plain")
            except (TimeoutError, RuntimeError) as failed:  # measured the rest: show it
                plain = [f"| plain reader: {failed!r} | | |"]
        if args.profile:
            disk = here / "rocks-profiled"
            rocks = write_config(here, boot, name, "rocksdb", disk)
            run = Run("RocksDB, new disk, under cProfile", rocks, here / "prof.log", args.profile)
            measured(run, config, serve=False)
            run.stop(signal.SIGTERM)
            rows.append(row(run, count, "under cProfile"))
            stats = pstats.Stats(str(args.profile))
            stats.sort_stats("cumulative").print_stats(25)
            stats.sort_stats("tottime").print_stats(20)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
    print(
        "| run | to ready s | recovery s | recovery CPU s | index s | states/s (recovery) "
        "| states/s (total) | to serving s | VmRSS MiB | VmHWM MiB | notes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    if plain:
        print("\nIn this process, over the same changelog:\n")
        print("| what | read | then |")
        print("|---|---:|---|")
        print("\n".join(plain))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=1_000_000)
    parser.add_argument("--templates", type=int, default=2_000, help="devices fed to the core")
    parser.add_argument("--open-share", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true", help="no memory-store runs")
    parser.add_argument("--skip-plain", action="store_true", help="no in-process readers")
    parser.add_argument("--profile", type=Path, help="a last new-disk run under cProfile")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="a checkout whose worker runs each round too (before/after, side by side)",
    )
    parser.add_argument(
        "--reuse",
        metavar="NAME",
        help="the changelog an earlier run filled on $KAFKA_BOOTSTRAP (with the same --states)",
    )
    args = parser.parse_args()
    if args.states < 1 or args.templates < 1 or args.rounds < 0:
        parser.error("--states and --templates must be >= 1, --rounds >= 0")
    if args.reuse and not os.environ.get("KAFKA_BOOTSTRAP"):
        parser.error("--reuse reads a changelog on the broker $KAFKA_BOOTSTRAP names")
    benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
