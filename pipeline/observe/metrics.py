"""The worker's Prometheus metrics, in a registry of its own (tests run several workers).

What a transaction carries (input messages, records per topic, sessions, dead letters,
duplicates, session_end lateness) is tallied while it is open and counted when it commits: an
aborted transaction's messages are read again, and counting them twice would say the worker
wrote what nobody will ever read. What the worker holds (devices, open sessions, partitions,
input lag, and with the RocksDB store its memory by RocksDB's account) is read from it at each
scrape.

The streaming core is watched where it hands over whole batches, set once by `instrument`
(the only place that knows them): its `apply` (messages, per input partition), its writer's
`send_outputs` (a device's pipeline records: events applied, sessions started and ended) and
`write_dead_letter`, and its processor's `expire` (how late a session_end came after its
deadline); `counting` counts records per topic as the sink ships each record batch. A
per-record wrapper of the sink cost 13% more CPU per event with the five default partners
(4.8 us of 36, in-process, interleaved rounds); these hooks showed no difference beyond the
noise of the same measurement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.config import Config
from pipeline.engine import Applied, DeviceState, Record
from pipeline.processing.processor import Outputs
from pipeline.sinks.kafka import TransactionalSink
from pipeline.streaming.core import FetchedRecord, StreamingCore
from pipeline.streaming.stores import RocksTable, rocksdb_memory
from pipeline.vocabulary import SESSION_END, SESSION_START

# No `_created` series beside every counter: Prometheus does not need them (process-wide).
disable_created_metrics()

LATENESS_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
COMMIT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class Held:
    """What the worker holds at a scrape."""

    devices: int = 0
    open_sessions: int = 0
    partitions: int = 0
    # (topic, partition) -> (messages behind the end, seconds since the last applied message)
    lag: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)
    # With the RocksDB store: its memory by RocksDB's account (`stores.rocksdb_memory`), bytes.
    rocksdb_memory: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Tally:
    """What the open transaction carries, counted once it commits."""

    messages: Counter[str] = field(default_factory=Counter)  # input topic -> messages
    records: Counter[str] = field(default_factory=Counter)  # output topic -> records
    events: int = 0  # applied
    started: int = 0
    ended: Counter[str] = field(default_factory=Counter)  # end_reason -> sessions
    dead_letters: Counter[str] = field(default_factory=Counter)  # reason -> dead letters
    lateness_s: list[float] = field(default_factory=list)


class WorkerMetrics:
    """One worker's metrics; `text()` is the /metrics page."""

    def __init__(self, config: Config) -> None:
        self.topics = config.topics
        self.grace_ms = round(config.worker.grace_s * 1000)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.input_messages = PromCounter(
            "sessionize_input_messages",
            "Input messages applied and committed, per input topic (the internal repartition "
            "topic included)",
            ["topic"],
            registry=r,
        )
        self.events_applied = PromCounter(
            "sessionize_events_applied", "Events applied to their sessions", registry=r
        )
        self.duplicates = PromCounter(
            "sessionize_duplicates", "Events dropped as duplicates", registry=r
        )
        self.dead_letters = PromCounter(
            "sessionize_dead_letters", "Dead letters written, per reason", ["reason"], registry=r
        )
        self.sessions_started = PromCounter(
            "sessionize_sessions_started", "Sessions started", registry=r
        )
        self.sessions_ended = PromCounter(
            "sessionize_sessions_ended", "Sessions ended, per end_reason", ["reason"], registry=r
        )
        self.records = PromCounter(
            "sessionize_records_written",
            "Records committed to each topic the worker writes (the table's changelog too)",
            ["topic"],
            registry=r,
        )
        self.lateness = Histogram(
            "sessionize_session_end_lateness_seconds",
            "How long after its deadline (the last message's arrival + the timeout) the timer "
            "closed a session; grace_s is part of it",
            buckets=LATENESS_BUCKETS_S,
            registry=r,
        )
        self.commit_duration = Histogram(
            "sessionize_commit_duration_seconds",
            "Duration of a checkpoint: changelog, flush, offsets, commit",
            buckets=COMMIT_BUCKETS_S,
            registry=r,
        )
        self.rollbacks = PromCounter(
            "sessionize_rollbacks",
            "Times the worker went back to its last commit after a transient Kafka failure "
            "(the input since is read again)",
            registry=r,
        )
        info = Gauge(
            "sessionize_worker_info",
            "The worker's instance id and app id",
            ["instance_id", "app_id"],
            registry=r,
        )
        info.labels(config.worker.instance_id, config.worker.app_id).set(1)
        self.pending = _Tally()
        self.duplicates_seen = 0  # the step's duplicate count at the last commit or rollback
        self.core: StreamingCore | None = None
        self.last_arrival: dict[tuple[str, int], int] = {}  # Kafka timestamp, per partition
        self._counted: TransactionalSink | None = None
        # Counted since the start (committed): for the progress lines.
        self.totals: Counter[str] = Counter()

    def watch(self, held: Callable[[], Held]) -> None:
        """Read the gauges of what the worker holds from `held` at each scrape."""
        self.registry.register(_HeldCollector(held))

    def text(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)

    # Hooks

    def instrument(self, core: StreamingCore) -> None:
        """Watch the streaming core (see the module's docstring)."""
        self.core = core
        apply = core.apply
        expire = core.processor.expire
        deadline = core.processor.profiles[0].rules.deadline
        pending = self.pending
        last_arrival = self.last_arrival
        writer = core.writer
        send_outputs = writer.send_outputs
        write_dead_letter = writer.write_dead_letter
        ended = pending.ended

        def counted_apply(tp: tuple[str, int], records: Sequence[FetchedRecord], start: int) -> int:
            applied = apply(tp, records, start)
            if applied:
                pending.messages[tp[0]] += applied
                last_arrival[tp] = records[-1].timestamp
            return applied

        def timed_expire(states: list[DeviceState], now_ts: int, out: Outputs) -> None:
            due = deadline(states[0])
            expire(states, now_ts, out)
            if due is not None and now_ts >= due:  # (the rules closed it)
                pending.lateness_s.append((now_ts - due + self.grace_ms) / 1000)

        def counted_outputs(out: Outputs, device_id: str) -> None:
            for record in out.pipeline_records:  # an enriched event, or a session record
                kind = record["type"]
                if kind == SESSION_START:
                    pending.started += 1
                elif kind == SESSION_END:
                    ended[record["end_reason"]] += 1
                else:
                    pending.events += 1
            send_outputs(out, device_id)

        def counted_dead_letter(key: bytes | None, dead_letter: Record) -> None:
            pending.dead_letters[dead_letter["reason"]] += 1
            write_dead_letter(key, dead_letter)

        core.apply = counted_apply  # type: ignore[method-assign]
        core.processor.expire = timed_expire  # type: ignore[method-assign]
        writer.send_outputs = counted_outputs  # type: ignore[method-assign]
        writer.write_dead_letter = counted_dead_letter  # type: ignore[method-assign]

    def counting(self, sink: TransactionalSink) -> TransactionalSink:
        """`sink`, with the records of each batch it ships tallied per topic."""
        if sink is self._counted:
            return sink
        ship = sink._ship
        records = self.pending.records

        async def counted_ship(slot: tuple[str, int], builder: Any) -> None:
            records[slot[0]] += builder.record_count()
            await ship(slot, builder)

        sink._ship = counted_ship  # type: ignore[method-assign]
        self._counted = sink
        return sink

    def committed(self) -> None:
        """The open transaction committed: what it carried is counted."""
        tally = self.pending
        totals = self.totals
        for topic, count in tally.messages.items():
            self.input_messages.labels(topic).inc(count)
            totals["messages"] += count
        for topic, count in tally.records.items():
            self.records.labels(topic).inc(count)
        self.events_applied.inc(tally.events)
        totals["events"] += tally.events
        if tally.started:
            self.sessions_started.inc(tally.started)
        for reason, count in tally.ended.items():
            self.sessions_ended.labels(reason).inc(count)
        for reason, count in tally.dead_letters.items():
            self.dead_letters.labels(reason).inc(count)
            totals["dead_letters"] += count
        for late in tally.lateness_s:
            self.lateness.observe(late)
        duplicates = self._duplicates()
        self.duplicates.inc(duplicates - self.duplicates_seen)
        self.duplicates_seen = duplicates
        self._clear()

    def rolled_back(self) -> None:
        """The open transaction was aborted: nothing it carried happened."""
        self.rollbacks.inc()
        self.duplicates_seen = self._duplicates()
        self._clear()

    def _duplicates(self) -> int:
        return self.core.step.verdicts[Applied.DUPLICATE] if self.core is not None else 0

    def _clear(self) -> None:
        tally = self.pending
        tally.messages.clear()
        tally.records.clear()
        tally.events = 0
        tally.started = 0
        tally.ended.clear()
        tally.dead_letters.clear()
        tally.lateness_s.clear()


class _HeldCollector(Collector):
    """The gauges of what the worker holds, read at each scrape."""

    def __init__(self, held: Callable[[], Held]) -> None:
        self.held = held

    def describe(self) -> Iterable[Metric]:
        return []  # (collected at each scrape only)

    def collect(self) -> Iterator[Metric]:
        held = self.held()
        yield _gauge("sessionize_devices", "Devices held by this worker", held.devices)
        yield _gauge("sessionize_open_sessions", "Sessions open on this worker", held.open_sessions)
        yield _gauge(
            "sessionize_partitions_assigned",
            "Input partitions assigned to this worker",
            held.partitions,
        )
        records = GaugeMetricFamily(
            "sessionize_input_lag_records",
            "Messages of the partition not applied yet",
            labels=["topic", "partition"],
        )
        seconds = GaugeMetricFamily(
            "sessionize_input_lag_seconds",
            "Since the Kafka timestamp of the last message applied, while messages wait (0 "
            "when caught up)",
            labels=["topic", "partition"],
        )
        for (topic, partition), (behind, age_s) in sorted(held.lag.items()):
            records.add_metric([topic, str(partition)], behind)
            seconds.add_metric([topic, str(partition)], age_s)
        yield records
        yield seconds
        if held.rocksdb_memory:
            memory = GaugeMetricFamily(
                "sessionize_rocksdb_memory_bytes",
                "RocksDB's memory by its own account: the block cache shared by every partition "
                "(with the memtables' charge and the index and filter blocks in it), the "
                "memtables, the table readers outside the cache, and the budget",
                labels=["part"],
            )
            for part, size in held.rocksdb_memory.items():
                memory.add_metric([part], size)
            yield memory


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def held_by(
    metrics: WorkerMetrics,
    highwater: Callable[[tuple[str, int]], int | None],
    tps: Iterable[tuple[str, int]],
    partitions: int,
    wall_ms: Callable[[], int],
) -> Held:
    """What the instrumented core holds; the lag of `tps` from their ends (`highwater`)."""
    core = metrics.core
    assert core is not None, "instrument the core first"
    last_arrival = metrics.last_arrival
    lag: dict[tuple[str, int], tuple[int, float]] = {}
    now = wall_ms()
    for tp in tps:
        end = highwater(tp)
        position = core.positions.get(tp)
        if end is None or position is None:
            continue
        behind = max(0, end - position)
        arrival = last_arrival.get(tp)
        age_s = max(0.0, (now - arrival) / 1000) if behind and arrival else 0.0
        lag[tp] = (behind, age_s)
    memory: dict[str, int] = {}
    if isinstance(core.stored, RocksTable):
        store = core.stored.store
        memory = {_PARTS[name]: size for name, size in rocksdb_memory(store).items()}
        budget = getattr(store.rocksdb_options, "memory_bytes", None)
        if budget is not None:
            memory["budget"] = budget
    return Held(core.devices_held, core.open_sessions, partitions, lag, memory)


_PARTS = {
    "block-cache-usage": "block_cache",
    "size-all-mem-tables": "memtables",
    "estimate-table-readers-mem": "table_readers",
}
