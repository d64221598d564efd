"""Offline mode (SPEC section 5): the same rules over a JSONL file, no Kafka.

Reads events or batches one per line, applies them in line order, and writes
`sessions.jsonl`, `enriched.jsonl`, `dead_letter.jsonl`, `partners/<name>.jsonl` and
`summary.json` to the output directory. At the end of the input every open session closes.
"""

from __future__ import annotations

import functools
import gc
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from itertools import compress
from operator import not_
from pathlib import Path
from typing import IO

import orjson

from pipeline.config import Config
from pipeline.engine import Applied, DeviceState, Record
from pipeline.input.events import attribute_rejection, dead_letter, parse_message
from pipeline.memory import keep_freed_memory
from pipeline.processing.processor import Outputs, Processor
from pipeline.vocabulary import SESSION_RECORD_TYPES

_READ_BYTES = 1 << 20
_FLUSH_RECORDS = 2048  # records between writes: big writes, bounded memory, warm caches
_dumps_line = functools.partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)


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

    def to_json(self) -> bytes:
        """The summary as pretty JSON."""
        fields = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        return orjson.dumps(fields, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


class _Writers:
    def __init__(self, output_dir: Path, partner_names: Iterable[str]) -> None:
        (output_dir / "partners").mkdir(parents=True, exist_ok=True)
        self.sessions = (output_dir / "sessions.jsonl").open("wb")
        self.enriched = (output_dir / "enriched.jsonl").open("wb")
        self.dead_letter = (output_dir / "dead_letter.jsonl").open("wb")
        self.partners = {
            name: (output_dir / "partners" / f"{name}.jsonl").open("wb") for name in partner_names
        }

    def write(self, out: Outputs, dead: list[Record], summary: Summary) -> None:
        canonical = out.canonical
        # Every record serialized once, whichever outputs carry it.
        lines = list(map(_dumps_line, canonical))
        is_session = [record["type"] in SESSION_RECORD_TYPES for record in canonical]
        for record in compress(canonical, is_session):
            if record["type"] == "session_start":
                summary.sessions_started += 1
            else:
                summary.sessions_ended[record["end_reason"]] += 1
        _write(self.sessions, list(compress(lines, is_session)))
        enriched = list(compress(lines, map(not_, is_session)))
        summary.events_applied += len(enriched)  # one enriched event per applied event
        _write(self.enriched, enriched)
        _write(self.dead_letter, list(map(_dumps_line, dead)))
        for name in out.verbatim:
            summary.partner_records[name] += len(lines)
            _write(self.partners[name], lines)
        for name, records in out.partners.items():
            summary.partner_records[name] += len(records)
            _write(self.partners[name], list(map(_dumps_line, records)))
        out.clear()
        dead.clear()

    def close(self) -> None:
        for handle in (self.sessions, self.enriched, self.dead_letter, *self.partners.values()):
            handle.close()


def _write(handle: IO[bytes], lines: list[bytes]) -> None:
    if lines:
        handle.write(b"".join(lines))


def _line_blocks(source: IO[bytes]) -> Iterator[list[bytes]]:
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
    apply = processor.apply
    states: dict[tuple[str, str], list[DeviceState]] = {}
    out = processor.new_outputs()
    emitted = out.canonical
    dead: list[Record] = []
    summary = Summary()
    verdicts: Counter[Applied] = Counter()
    writers = _Writers(output_dir, (p.name for p in config.partners))
    limits = config.limits
    max_payload = limits.max_dead_letter_payload_bytes
    applied = Applied.APPLIED
    number = 0
    try:
        for block in _line_blocks(source):
            first = number + 1
            for number, message in enumerate(block, start=first):
                parsed = parse_message(message, now_ms, limits)
                if parsed.rejections:
                    for rejection in parsed.rejections:
                        summary.dead_letters[rejection.reason] += 1
                        dead.append(dead_letter(rejection, message, {"line": number}, max_payload))
                for event in parsed.events:
                    key = (event["app_id"], event["device_id"])
                    device = states.get(key)
                    if device is None:
                        device = states[key] = processor.new_states(*key)
                    verdict = apply(device, event, out)
                    if verdict is not applied:
                        verdicts[verdict] += 1
                        if verdict.rejected:
                            index = parsed.index_of(event)
                            rejection = attribute_rejection(verdict.value, event, index, message)
                            dead.append(
                                dead_letter(rejection, message, {"line": number}, max_payload)
                            )
                            summary.dead_letters[rejection.reason] += 1
                if len(emitted) >= _FLUSH_RECORDS:
                    writers.write(out, dead, summary)
        for device in states.values():
            processor.close_at_end(device, out)
            if len(emitted) >= _FLUSH_RECORDS:
                writers.write(out, dead, summary)
        writers.write(out, dead, summary)
    finally:
        writers.close()
    summary.lines = number
    summary.duplicates = verdicts[Applied.DUPLICATE]
    (output_dir / "summary.json").write_bytes(summary.to_json() + b"\n")
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
