"""Offline mode (SPEC section 5): the same rules over a JSONL file, no Kafka.

Reads events or batches one per line, runs each through the one-message step
(`pipeline.processing.step`) in line order, and writes the output directory's files
(`pipeline.sinks.files`). At the end of the input every open session closes.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import IO

import orjson

from pipeline.config import Config
from pipeline.engine import Applied, DeviceState, Record
from pipeline.memory import keep_freed_memory
from pipeline.processing.processor import Outputs, Processor
from pipeline.processing.routing import RoutedOutputs, route
from pipeline.processing.step import MessageStep
from pipeline.sinks.files import OutputFiles, json_line
from pipeline.vocabulary import SESSION_START

_READ_BYTES = 1 << 20
_FLUSH_RECORDS = 2048  # records between writes: big writes, bounded memory, warm caches


@dataclass(slots=True)
class Summary:
    """What a run saw and wrote. Every line is one message; every event is applied,
    a duplicate, or a dead letter."""

    lines: int = 0
    events_applied: int = 0
    duplicates: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    sessions_started: int = 0
    sessions_ended: Counter[str] = field(default_factory=Counter)
    partner_records: Counter[str] = field(default_factory=Counter)

    def add(self, other: Summary) -> None:
        """Add the counts of `other`, a run over another shard of the same input's devices
        (`lines` is every shard's: each reads the whole input)."""
        self.lines = max(self.lines, other.lines)
        self.events_applied += other.events_applied
        self.duplicates += other.duplicates
        self.sessions_started += other.sessions_started
        # update, not +: a partner with no records keeps its 0, as in a single run
        self.dead_letters.update(other.dead_letters)
        self.sessions_ended.update(other.sessions_ended)
        self.partner_records.update(other.partner_records)

    def to_json(self) -> bytes:
        """The summary as pretty JSON."""
        fields = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        return orjson.dumps(fields, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


class _Writer:
    """Writes batches of outputs to the output files, counting them in the summary."""

    def __init__(self, files: OutputFiles, summary: Summary) -> None:
        self.files = files
        self.summary = summary

    def write(self, out: Outputs, dead: list[Record]) -> None:
        routed = route(out, json_line)
        count_outputs(self.summary, routed, out, dead)
        self.files.write(routed, out.verbatim, list(map(json_line, dead)))
        out.clear()
        dead.clear()


def count_outputs(
    summary: Summary, routed: RoutedOutputs, out: Outputs, dead: list[Record]
) -> None:
    """Count a batch of outputs in the summary: what `--jobs` shards add up must match."""
    for record in routed.session_records():
        if record["type"] == SESSION_START:
            summary.sessions_started += 1
        else:
            summary.sessions_ended[record["end_reason"]] += 1
    summary.events_applied += len(routed.lines) - sum(routed.is_session)  # one per event
    for record in dead:
        summary.dead_letters[record["reason"]] += 1
    for name in out.verbatim:
        summary.partner_records[name] += len(routed.lines)
    for name, records in out.partners.items():
        summary.partner_records[name] += len(records)


class _Devices:
    """Every device's states, one per profile, created with the device's first event."""

    def __init__(self, processor: Processor, out: Outputs) -> None:
        self.new_states = processor.new_states
        self.processor_apply = processor.apply
        self.out = out
        self.records = out.pipeline_records
        self.states: dict[tuple[str, str], list[DeviceState]] = {}
        rules = processor.only_rules  # the rules alone: called with no processor in between
        self.rules_apply = rules.apply if rules is not None else None

    def apply(self, event: Record) -> Applied:
        """Apply a valid event to its device (the step's `apply_event`)."""
        key = (event["app_id"], event["device_id"])
        states = self.states.get(key)
        if states is None:
            states = self.states[key] = self.new_states(*key)
        if self.rules_apply is not None:
            return self.rules_apply(states[0], event, self.records, in_place=True)
        return self.processor_apply(states, event, self.out)


def line_blocks(source: IO[bytes]) -> Iterator[list[bytes]]:
    """The lines of `source` without their newlines, a large block of them at a time."""
    rest = b""
    while block := source.read(_READ_BYTES):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()  # an unfinished line: completed by the next block
        yield lines
    if rest:
        yield [rest]


def run_offline(source: IO[bytes], output_dir: Path, config: Config, now_ms: int) -> Summary:
    """Apply every line of `source` and write all outputs under `output_dir`.

    `now_ms` is the processing time used for the future-skew check.
    """
    keep_freed_memory()  # records are freed after every write: reuse the memory
    # Device states are long-lived and acyclic: the cyclic collector would only rescan them.
    gc.freeze()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run(source, output_dir, config, now_ms)
    finally:
        if gc_was_enabled:
            gc.enable()
        gc.unfreeze()


def _run(source: IO[bytes], output_dir: Path, config: Config, now_ms: int) -> Summary:
    processor = Processor(config.sessions, config.partners)
    out = processor.new_outputs()
    emitted = out.pipeline_records
    devices = _Devices(processor, out)
    step = MessageStep(devices.apply, config.limits.max_dead_letter_payload_bytes)
    run_step = step.run
    dead: list[Record] = []
    summary = Summary()
    files = OutputFiles(output_dir, (p.name for p in config.partners))
    writer = _Writer(files, summary)
    limits = config.limits
    number = 0
    try:
        for block in line_blocks(source):
            first = number + 1
            for number, message in enumerate(block, start=first):
                rejections = run_step(message, now_ms, limits)
                if rejections:
                    origin = {"line": number}
                    dead.extend(step.dead_letter(r, message, origin) for r in rejections)
                if len(emitted) >= _FLUSH_RECORDS:
                    writer.write(out, dead)
        for states in devices.states.values():
            processor.close_at_end(states, out)
            if len(emitted) >= _FLUSH_RECORDS:
                writer.write(out, dead)
        writer.write(out, dead)
    finally:
        files.close()
    summary.lines = number
    summary.duplicates = step.verdicts[Applied.DUPLICATE]
    files.write_summary(summary.to_json())
    return summary


def summary_line(summary: Summary) -> str:
    """One line for a person: what the run did."""
    ended = sum(summary.sessions_ended.values())
    dead = sum(summary.dead_letters.values())
    return (
        f"{summary.lines} lines: {summary.events_applied} events applied, "
        f"{summary.duplicates} duplicates, {dead} dead letters; "
        f"{summary.sessions_started} sessions started, {ended} ended"
    )
