"""Where the streaming core's records go: each to its topic, through the sink.

A device's outputs are keyed by its device id (`pipeline.processing.routing` says which topic
takes each); events of another partition's devices go to the repartition topic, with a header
naming the message they came from; dead letters are keyed as their message was. A record its
topic would refuse (RecordTooLarge) is not lost: an output becomes a `too_large` rejection of
its message (`unwritable`), a forwarded batch is split, a dead letter has its error cut.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from pipeline.config import Config
from pipeline.engine import Record
from pipeline.input import TOO_LARGE, Rejection, batch_event_as_sent
from pipeline.processing.processor import Outputs
from pipeline.processing.routing import route, values
from pipeline.sinks.kafka import RecordSink, RecordTooLarge, Refused
from pipeline.streaming.partitioning import partition_for

log = logging.getLogger("sessionize.worker")

ORIGIN_HEADER = "sessionize-origin"


class _NoSink:
    def add(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no sink yet: the producer starts with the first message or tick")

    def add_values(self, *args: Any, **kwargs: Any) -> list[Refused]:
        raise RuntimeError("no sink yet: the producer starts with the first message or tick")


class TopicWriter:
    """Writes outputs, forwarded events and dead letters to `sink` (set by the adapter)."""

    def __init__(
        self, config: Config, partitions: int, repartition_topic: str, verbatim: tuple[str, ...]
    ) -> None:
        self.sink: RecordSink = _NoSink()
        self.partitions = partitions
        self.repartition_topic = repartition_topic
        self.topics = config.topics
        self.partner_topics = {p.name: p.topic for p in config.partners}
        self.verbatim_topics = [self.partner_topics[name] for name in verbatim]
        # Output records too large for their topic, as rejections for dead letters.
        self.unwritable: list[Rejection] = []

    def send_outputs(self, out: Outputs, device_id: str) -> None:
        """Queue what one device emitted (and clear `out`); every output is keyed by its
        device id, so each topic takes the device's records in one `add_values`, in order."""
        key = device_id.encode()
        add_values = self.sink.add_values
        routed = route(out, orjson.dumps)
        records, lines = routed.records, routed.lines
        refused: list[int] = []  # positions in `lines`
        for topic, positions in self._pipeline_topics(routed.is_session):
            part = lines if positions is None else [lines[at] for at in positions]
            for at, exc in add_values(topic, key, part):
                at = at if positions is None else positions[at]
                refused.append(at)
                self._unwritable(exc, records[at], lines[at])
        if self.verbatim_topics:
            # As big a record takes as much room on a verbatim topic: those refused are not tried.
            skip = set(refused)
            kept = [at for at in range(len(lines)) if at not in skip] if skip else None
            part = lines if kept is None else [lines[at] for at in kept]
            for topic in self.verbatim_topics:
                for at, exc in add_values(topic, key, part):
                    self._unwritable(exc, records[at if kept is None else kept[at]], part[at])
        for name, formatted in routed.formatted():
            serialized = values(formatted)
            for at, exc in add_values(self.partner_topics[name], key, serialized):
                self._unwritable(exc, formatted[at], serialized[at], f"partner {name}'s ")
        out.clear()

    def _pipeline_topics(self, is_session: list[bool]) -> list[tuple[str, list[int] | None]]:
        """Each pipeline output with the positions of its records (None: all of them)."""
        if True not in is_session:
            return [(self.topics.enriched, None)]
        if False not in is_session:
            return [(self.topics.sessions, None)]
        return [
            (self.topics.sessions, [at for at, session in enumerate(is_session) if session]),
            (self.topics.enriched, [at for at, session in enumerate(is_session) if not session]),
        ]

    def _unwritable(
        self, error: RecordTooLarge, record: Record, value: bytes, whose: str = ""
    ) -> None:
        # A record its topic would refuse: a too_large dead letter instead, carrying the record.
        kind = record.get("type") or record.get("event_type") or "output"
        about = ", ".join(
            f"{name} {record[name]}" for name in ("session_id", "event_id") if name in record
        )
        error_text = f"its {whose}{kind} record ({about}) is {error}"
        self.unwritable.append(Rejection(TOO_LARGE, error_text, None, value))

    def forward(
        self,
        events: list[Record],
        indices: list[int | None],
        message: bytes,
        origin: dict[str, Any],
        arrival_ms: int,
    ) -> list[Rejection]:
        """Forward events of `message` to their devices' partitions, a batch per device;
        returns the rejections of those too large to go."""
        by_device: dict[str, list[Record]] = {}
        device_indices: dict[str, list[int | None]] = {}
        for event, index in zip(events, indices, strict=True):
            device_id: str = event["device_id"]
            by_device.setdefault(device_id, []).append(event)
            device_indices.setdefault(device_id, []).append(index)
        rejections = []
        for device_id, bodies in by_device.items():
            refused = self._forward(
                device_id, bodies, origin, device_indices[device_id], arrival_ms
            )
            for index, exc in refused:
                payload = batch_event_as_sent(message, index) if index is not None else None
                error = f"forwarded to its device's partition, the event is {exc}"
                rejections.append(Rejection(TOO_LARGE, error, index, payload))
        return rejections

    def _forward(
        self,
        device_id: str,
        bodies: list[Record],
        origin: dict[str, Any],
        indices: list[int | None],
        arrival_ms: int,
    ) -> list[tuple[int | None, RecordTooLarge]]:
        """Forward a device's events to its partition; returns the ones too large to."""
        header = orjson.dumps({"origin": origin, "indices": indices})
        try:
            self.sink.add(
                self.repartition_topic,
                device_id.encode(),
                orjson.dumps({"events": bodies}),
                partition=partition_for(device_id, self.partitions),
                timestamp_ms=arrival_ms,
                headers=[(ORIGIN_HEADER, header)],
            )
        except RecordTooLarge as exc:
            if len(bodies) == 1:
                return [(indices[0], exc)]
            # Events inherit the batch's ids: forwarded, a batch can outgrow its message.
            half = len(bodies) // 2
            return [
                *self._forward(device_id, bodies[:half], origin, indices[:half], arrival_ms),
                *self._forward(device_id, bodies[half:], origin, indices[half:], arrival_ms),
            ]
        return []

    def write_dead_letter(self, key: bytes | None, dead_letter: Record) -> None:
        """Queue a dead letter, keyed as its message was."""
        try:
            self.sink.add(self.topics.deadletter, key, orjson.dumps(dead_letter))
        except RecordTooLarge as exc:  # its payload is capped: only a huge error text can do it
            dead_letter["error"] = (
                dead_letter["error"][:1000] + " [cut: the dead letter was too large]"
            )
            try:
                self.sink.add(self.topics.deadletter, key, orjson.dumps(dead_letter))
            except RecordTooLarge:
                log.error("a dead letter of %s is %s: not written", _where(dead_letter), exc)


def _where(record: dict[str, Any]) -> str:
    return f"{record.get('topic')}:{record.get('partition')}@{record.get('offset')}"
