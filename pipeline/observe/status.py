"""What a running worker is doing, read from it: ready or why not, what it holds, who owns a
device, and the progress and ready lines of its log.

The owner of a device is the worker that has its partition of the table's changelog. Each
worker publishes its web address in its consumer-group member metadata: Faust's partition
assignor sends the app's `canonical_url` with every join, and hands every member the map of
changelog partitions to addresses (`assignor.table_metadata`), the same map Faust's own table
routing uses. The worker sets `canonical_url` to its web address (`pipeline.observe.web`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from faust.types import TP

from pipeline.kafka.outages import client_noise
from pipeline.observe.logs import FIELDS
from pipeline.observe.metrics import Held, held_by
from pipeline.streaming.partitioning import partition_for
from pipeline.streaming.worker import SessionWorker
from pipeline.vocabulary import wall_ms

log = logging.getLogger("sessionize.worker")


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the worker takes part in the pipeline; if not, what it waits for."""

    ready: bool
    partitions: tuple[int, ...]
    waiting_for: str | None = None


class WorkerStatus:
    """Reads the state of one worker (its app, core and producers) for the web and the log."""

    def __init__(self, worker: SessionWorker) -> None:
        self.worker = worker
        self.app: Any = worker.app
        self.changelog = worker.table.changelog_topic.get_topic_name()
        self.inputs = (
            worker.input_topic.get_topic_name(),
            worker.repartition_topic.get_topic_name(),
        )
        self.was_ready = False
        self.progress_at = time.monotonic()
        self.progress_totals = dict(worker.metrics.totals)

    # Readiness

    def partitions(self) -> tuple[int, ...]:
        """The input partitions assigned to this worker."""
        actives = self.app.assignor.assigned_actives()
        return tuple(sorted({tp.partition for tp in actives if tp.topic == self.inputs[0]}))

    def readiness(self) -> Readiness:
        """Partitions assigned, the table recovered and its devices held, the producer up, and
        Kafka answering."""
        worker = self.worker
        if worker.stopped:
            return Readiness(False, (), "the worker is stopping")
        partitions = self.partitions()
        recovery: Any = self.app.tables.recovery
        if not partitions:
            waiting = "partitions: none assigned to this worker (yet)"
        elif self.app.rebalancing or recovery.in_recovery:
            waiting = "the table's recovery from its changelog"
        elif worker.producers is None or worker.producers.producer is None:
            waiting = "the transactional producer"
        elif worker.core.indexed != frozenset(partitions):
            waiting = "the recovered devices to be indexed"
        elif client_noise.in_outage:
            waiting = "Kafka, unreachable"
        else:
            return Readiness(True, partitions)
        return Readiness(False, partitions, waiting)

    def held(self) -> Held:
        """The devices, sessions and lag of this worker, for the metrics."""
        worker = self.worker
        tps = [TP(topic, p) for p in self.partitions() for topic in self.inputs]
        consumer = self.app.consumer
        return held_by(
            worker.metrics, lambda tp: _highwater(consumer, tp), tps, len(tps) // 2, wall_ms
        )

    # Ownership

    def owner_of(self, device_id: str) -> tuple[int, str | None, bool]:
        """The device's partition, the web address of the worker owning it (None: nobody
        now, a rebalance), and whether that is this worker."""
        partition = partition_for(device_id, self.worker.core.partitions)
        mine = TP(self.changelog, partition) in self.app.assignor.assigned_actives()
        owner = None
        for url, topics in self.app.assignor.table_metadata(self.changelog).items():
            if partition in topics.get(self.changelog, ()):
                owner = url
        return partition, owner, mine

    # Log lines

    def note(self) -> None:
        """Log a line when the worker becomes ready, or stops being so."""
        readiness = self.readiness()
        if readiness.ready == self.was_ready:
            return
        self.was_ready = readiness.ready
        held = self.held()
        if readiness.ready:
            log.info(
                "ready: input partitions %s, %d devices in the table, %d sessions open",
                list(readiness.partitions),
                held.devices,
                held.open_sessions,
                extra={
                    FIELDS: {
                        "event": "ready",
                        "partitions": list(readiness.partitions),
                        "devices": held.devices,
                        "open_sessions": held.open_sessions,
                    }
                },
            )
        else:
            log.info(
                "not ready: waiting for %s",
                readiness.waiting_for,
                extra={FIELDS: {"event": "not_ready", "waiting_for": readiness.waiting_for}},
            )

    def progress(self) -> None:
        """The progress line: events per second since the last one, sessions, lag, dead
        letters."""
        now = time.monotonic()
        totals = self.worker.metrics.totals
        seconds = max(now - self.progress_at, 1e-9)
        events = totals["events"] - self.progress_totals.get("events", 0)
        dead = totals["dead_letters"] - self.progress_totals.get("dead_letters", 0)
        self.progress_at, self.progress_totals = now, dict(totals)
        held = self.held()
        lag = sum(behind for behind, _ in held.lag.values())
        lag_s = max((age for _, age in held.lag.values()), default=0.0)
        readiness = self.readiness()
        state = "" if readiness.ready else f" (not ready: waiting for {readiness.waiting_for})"
        log.info(
            "progress: %.0f events/s over %.0f s, %d sessions open, %d devices, lag %d "
            "messages (%.1f s), %d dead letters (%d since start)%s",
            events / seconds,
            seconds,
            held.open_sessions,
            held.devices,
            lag,
            lag_s,
            dead,
            totals["dead_letters"],
            state,
            extra={
                FIELDS: {
                    "event": "progress",
                    "events_per_s": round(events / seconds, 1),
                    "open_sessions": held.open_sessions,
                    "devices": held.devices,
                    "lag_messages": lag,
                    "lag_s": round(lag_s, 1),
                    "dead_letters": dead,
                    "dead_letters_total": totals["dead_letters"],
                    "ready": readiness.ready,
                }
            },
        )


def _highwater(consumer: Any, tp: tuple[str, int]) -> int | None:
    try:
        end: int | None = consumer.highwater(tp)
    except Exception:  # not assigned (any more)
        return None
    return end
