"""The output directory's files: which file takes which lines."""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.engine import SessionConfig
from pipeline.partners import Partner
from pipeline.processing.processor import Processor
from pipeline.processing.routing import route
from pipeline.sinks.files import OutputFiles, json_line, partner_file, write_records
from pipeline.testing import T0, launch, types

MIRROR = Partner(name="mirror", format="canonical", topic="partner.mirror")


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_a_batch_goes_to_sessions_enriched_dead_letters_and_partners(tmp_path: Path) -> None:
    processor = Processor(SessionConfig(), [MIRROR])
    out = processor.new_outputs()
    processor.apply(processor.new_states("a1", "d1"), launch("d1", T0), out)
    files = OutputFiles(tmp_path, ["mirror"])
    files.write(route(out, json_line), out.verbatim, [json_line({"type": "dead_letter"})])
    files.write_summary(b"{}")
    files.close()
    assert types(lines(tmp_path / "sessions.jsonl")) == ["session_start"]
    assert types(lines(tmp_path / "enriched.jsonl")) == ["app_launch"]
    assert types(lines(tmp_path / "dead_letter.jsonl")) == ["dead_letter"]
    assert types(lines(partner_file(tmp_path, "mirror"))) == ["session_start", "app_launch"]
    assert (tmp_path / "summary.json").read_bytes() == b"{}\n"


def test_records_are_written_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    with path.open("wb") as handle:
        write_records(handle, [{"a": 1}, {"b": 2}])
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'
