"""The output directory of a run without Kafka (offline mode, the demo's copy of its topics).

    sessions.jsonl       session_start and session_end records
    enriched.jsonl       every applied event, with its session fields
    dead_letter.jsonl    rejected messages and events
    partners/<name>.jsonl  each partner's records, in its format
    summary.json         what the run saw and wrote

Every file is JSON Lines: one record per line, each line ending in a newline.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import orjson

from pipeline.engine import Record
from pipeline.processing.routing import RoutedOutputs, json_lines

SESSIONS_FILE = "sessions.jsonl"
ENRICHED_FILE = "enriched.jsonl"
DEAD_LETTER_FILE = "dead_letter.jsonl"
PARTNERS_DIR = "partners"
SUMMARY_FILE = "summary.json"

json_line = functools.partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)
"""A record as one JSON Lines line, newline included."""


def partner_file(output_dir: Path, name: str) -> Path:
    """Where partner `name`'s records go."""
    return output_dir / PARTNERS_DIR / f"{name}.jsonl"


class OutputFiles:
    """The JSONL files of an output directory, open for writing (created or truncated)."""

    def __init__(self, output_dir: Path, partner_names: Iterable[str]) -> None:
        (output_dir / PARTNERS_DIR).mkdir(parents=True, exist_ok=True)
        self.output_dir = output_dir
        self.sessions = (output_dir / SESSIONS_FILE).open("wb")
        self.enriched = (output_dir / ENRICHED_FILE).open("wb")
        self.dead_letter = (output_dir / DEAD_LETTER_FILE).open("wb")
        self.partners = {name: partner_file(output_dir, name).open("wb") for name in partner_names}

    def write(
        self, routed: RoutedOutputs, verbatim: Iterable[str], dead_letters: list[bytes]
    ) -> None:
        """Write a batch of outputs (serialized with `json_line`) and of dead-letter lines;
        the partners named in `verbatim` take every one of the pipeline's records."""
        write_lines(self.sessions, routed.sessions())
        write_lines(self.enriched, routed.enriched())
        write_lines(self.dead_letter, dead_letters)
        for name in verbatim:
            write_lines(self.partners[name], routed.lines)
        for name, records in routed.formatted():
            self.partners[name].write(json_lines(records))

    def write_summary(self, summary: bytes) -> None:
        """Write summary.json (the summary's JSON, a newline is added)."""
        (self.output_dir / SUMMARY_FILE).write_bytes(summary + b"\n")

    def close(self) -> None:
        """Close every file."""
        for handle in (self.sessions, self.enriched, self.dead_letter, *self.partners.values()):
            handle.close()


def write_lines(handle: IO[bytes], lines: list[bytes]) -> None:
    """Append lines (each ending in a newline) to an open file in one write."""
    if lines:
        handle.write(b"".join(lines))


def write_records(handle: IO[bytes], records: Iterable[Record]) -> None:
    """Append records to an open JSONL file."""
    write_lines(handle, list(map(json_line, records)))
