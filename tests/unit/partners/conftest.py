"""Fixtures for the partner format tests: canonical records, schemas and golden files.

Golden files are rewritten from the formatters only when UPDATE_GOLDEN=1 is set; read every
rewritten file against the partner's docs before committing it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[3]
GOLDEN_DIR = REPO / "tests" / "golden" / "partners"
SCHEMA_DIR = REPO / "schemas" / "partners"
CANONICAL_INPUT = GOLDEN_DIR / "canonical_input.jsonl"

START_TS = 1_717_243_200_000  # 2024-06-01T12:00:00Z

Record = dict[str, Any]
Factory = Callable[..., Record]


def load_jsonl(path: Path) -> list[Record]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@cache
def _schema_validator(format_name: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMA_DIR / f"{format_name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture
def schema_errors() -> Callable[[str, Record], list[str]]:
    """Messages of every way a record breaks ``schemas/partners/<format>.schema.json``."""

    def errors(format_name: str, record: Record) -> list[str]:
        found = _schema_validator(format_name).iter_errors(record)
        return [f"{list(error.absolute_path)}: {error.message}" for error in found]

    return errors


@pytest.fixture(scope="session")
def schema_dir() -> Path:
    return SCHEMA_DIR


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def canonical_input() -> list[Record]:
    """The hand-written canonical records every format's golden file is made from."""
    return load_jsonl(CANONICAL_INPUT)


@pytest.fixture
def golden() -> Callable[[str, list[Record]], None]:
    """Compare records with ``tests/golden/partners/<name>.jsonl``; UPDATE_GOLDEN=1 rewrites it."""

    def check(name: str, records: list[Record]) -> None:
        path = GOLDEN_DIR / f"{name}.jsonl"
        if os.environ.get("UPDATE_GOLDEN") == "1":
            lines = (json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            path.write_text("".join(lines), encoding="utf-8")
        assert path.exists(), f"{path} is missing: run the tests once with UPDATE_GOLDEN=1"
        assert load_jsonl(path) == json.loads(json.dumps(records))

    return check


@pytest.fixture
def make_event() -> Factory:
    """Build an enriched event; keyword arguments replace or add fields."""

    def make(**fields: Any) -> Record:
        record: Record = {
            "event_id": "evt-1",
            "app_id": "app.test",
            "device_id": "device-0001",
            "type": "custom_event",
            "ts": START_TS + 1_000,
            "name": "Tap",
            "attributes": {"color": "blue", "size": 3},
            "session_id": "session-1",
            "session_number": 1,
            "session_seq": 2,
            "session_start_ts": START_TS,
        }
        record.update(fields)
        return record

    return make


@pytest.fixture
def make_session_start() -> Factory:
    """Build a device's first session_start record; keyword arguments replace fields."""

    def make(**fields: Any) -> Record:
        record: Record = {
            "type": "session_start",
            "session_id": "session-1",
            "app_id": "app.test",
            "device_id": "device-0001",
            "user_id": None,
            "session_number": 1,
            "start_ts": START_TS,
            "previous_session_id": None,
            "previous_session_start_ts": None,
            "previous_session_duration_ms": None,
        }
        record.update(fields)
        return record

    return make


@pytest.fixture
def make_session_end() -> Factory:
    """Build a session_end record closed by timeout; keyword arguments replace fields."""

    def make(**fields: Any) -> Record:
        record: Record = {
            "type": "session_end",
            "session_id": "session-1",
            "app_id": "app.test",
            "device_id": "device-0001",
            "user_id": "user-0001",
            "user_ids": ["user-0001"],
            "session_number": 1,
            "start_ts": START_TS,
            "end_ts": START_TS + 5_000,
            "duration_ms": 5_000,
            "foreground_ms": 4_000,
            "event_count": 3,
            "end_reason": "timeout",
            "attributes": {"plan": "pro", "launches": 2},
        }
        record.update(fields)
        return record

    return make
