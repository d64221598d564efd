"""Check output records against `schemas/` with the reference `jsonschema` library.

The pipeline validates input with jsonschema-rs; the tests check output with a second,
independent implementation (Draft 7, with a `referencing` registry holding every schema under
its `$id`, so relative refs such as `event.schema.json` resolve). Import it from any test:
`from tests.schema_check import check_output_dir, check_record`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

Record = dict[str, Any]

# The canonical output files and the schema of each record type they hold.
CANONICAL_SCHEMAS: Mapping[str, str] = {
    "session_start": "session_start",
    "session_end": "session_end",
    "dead_letter": "dead_letter",
}


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMA_DIR.rglob("*.schema.json")):
        contents = json.loads(path.read_text("utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents)))
    registry: Registry = Registry().with_resources(resources)
    return registry


@cache
def validator(name: str) -> Draft7Validator:
    """A Draft 7 validator for schema `name` ("session_end", "partners/ga4", ...)."""
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text("utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, registry=_registry())


def check_record(record: Any, name: str) -> None:
    """Fail (AssertionError) with every violation when `record` does not match schema `name`."""
    errors = sorted(validator(name).iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
        )
        raise AssertionError(f"record does not match {name}.schema.json: {details}\n{record!r}")


def canonical_schema(record: Mapping[str, Any]) -> str:
    """The schema of a canonical output record: by its `type`, enriched_event for events."""
    return CANONICAL_SCHEMAS.get(record.get("type", ""), "enriched_event")


def read_jsonl(path: Path) -> list[Record]:
    """Every line of a JSONL file, parsed (each must be a JSON object)."""
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert all(isinstance(r, dict) for r in records), f"{path}: not all lines are objects"
    return records


def check_jsonl(path: Path, name: str | None = None) -> list[Record]:
    """Read a JSONL output file and check every record: against `name`, or by its type."""
    records = read_jsonl(path)
    for number, record in enumerate(records, start=1):
        try:
            check_record(record, name or canonical_schema(record))
        except AssertionError as exc:
            raise AssertionError(f"{path} line {number}: {exc}") from None
    return records


def check_output_dir(output_dir: Path, partner_formats: Mapping[str, str]) -> dict[str, Any]:
    """Check every output file of an offline run and return the parsed records.

    `partner_formats` maps each configured partner's name to its format. The result has keys
    "sessions", "enriched", "dead_letter" (record lists), "partners" (name -> records) and
    "summary" (the parsed summary.json).
    """
    sessions = check_jsonl(output_dir / "sessions.jsonl")
    assert {r["type"] for r in sessions} <= {"session_start", "session_end"}
    enriched = check_jsonl(output_dir / "enriched.jsonl", "enriched_event")
    dead = check_jsonl(output_dir / "dead_letter.jsonl", "dead_letter")
    partner_files = {p.stem for p in (output_dir / "partners").glob("*.jsonl")}
    assert partner_files == set(partner_formats), f"partner files {sorted(partner_files)}"
    partners = {
        name: check_jsonl(output_dir / "partners" / f"{name}.jsonl", f"partners/{fmt}")
        for name, fmt in partner_formats.items()
    }
    summary = json.loads((output_dir / "summary.json").read_text("utf-8"))
    return {
        "sessions": sessions,
        "enriched": enriched,
        "dead_letter": dead,
        "partners": partners,
        "summary": summary,
    }


def partner_formats(partners: Iterable[Any]) -> dict[str, str]:
    """name -> format of configured partners (pipeline.partners.Partner objects)."""
    return {p.name: p.format for p in partners}
