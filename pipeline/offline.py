"""Offline mode (SPEC section 5): the same rules over a JSONL file, no Kafka.

Reads events or batches one per line, applies them in line order, and writes
`sessions.jsonl`, `enriched.jsonl`, `dead_letter.jsonl`, `partners/<name>.jsonl` and
`summary.json` to the output directory. At the end of the input every open session closes.
"""

from __future__ import annotations

import functools
import gc
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from itertools import chain
from pathlib import Path
from typing import IO

import orjson

from pipeline.config import Config
from pipeline.engine import Applied, DeviceState, Record
from pipeline.events import attribute_rejection, dead_letter, parse_message
from pipeline.processor import Outputs, Processor

_FLUSH_EVERY = 2048  # lines between writes: big writes, bounded memory
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
        for record in out.sessions:
            if record["type"] == "session_start":
                summary.sessions_started += 1
            else:
                summary.sessions_ended[record["end_reason"]] += 1
        # The canonical partner shares the pipeline's record objects: serialize those once.
        lines = {id(r): _dumps_line(r) for r in chain(out.sessions, out.enriched)}
        _write(self.sessions, out.sessions, lines)
        _write(self.enriched, out.enriched, lines)
        _write(self.dead_letter, dead, lines)
        for name, records in out.partners.items():
            summary.partner_records[name] += len(records)
            _write(self.partners[name], records, lines)
        out.clear()
        dead.clear()

    def close(self) -> None:
        for handle in (self.sessions, self.enriched, self.dead_letter, *self.partners.values()):
            handle.close()


def _write(handle: IO[bytes], records: list[Record], lines: dict[int, bytes]) -> None:
    if records:
        handle.write(b"".join([lines.get(id(r)) or _dumps_line(r) for r in records]))


def run_offline(source: IO[bytes], output_dir: Path, config: Config, now_ms: int) -> Summary:
    """Apply every line of `source` and write all outputs under `output_dir`.

    `now_ms` is the processing time used for the future-skew check.
    """
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
    states: dict[tuple[str, str], list[DeviceState]] = {}
    out = processor.new_outputs()
    dead: list[Record] = []
    summary = Summary()
    writers = _Writers(output_dir, (p.name for p in config.partners))
    limits = config.limits
    try:
        for number, raw_line in enumerate(source, start=1):
            message = raw_line[:-1] if raw_line.endswith(b"\n") else raw_line
            parsed = parse_message(message, now_ms, limits)
            for rejection in parsed.rejections:
                summary.dead_letters[rejection.reason] += 1
                dead.append(dead_letter(rejection, message, {"line": number}))
            for position, event in enumerate(parsed.events):
                key = (event["app_id"], event["device_id"])
                device = states.get(key)
                if device is None:
                    device = states[key] = processor.new_states(*key)
                verdict = processor.apply(device, event, out)
                if verdict is Applied.APPLIED:
                    summary.events_applied += 1
                elif verdict is Applied.DUPLICATE:
                    summary.duplicates += 1
                else:
                    index = parsed.indices[position] if parsed.indices is not None else None
                    rejection = attribute_rejection(verdict.value, event, index, message)
                    dead.append(dead_letter(rejection, message, {"line": number}))
                    summary.dead_letters[rejection.reason] += 1
            summary.lines = number
            if number % _FLUSH_EVERY == 0:
                writers.write(out, dead, summary)
        for closed, device in enumerate(states.values(), start=1):
            processor.close_at_end(device, out)
            if closed % _FLUSH_EVERY == 0:
                writers.write(out, dead, summary)
        writers.write(out, dead, summary)
    finally:
        writers.close()
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
