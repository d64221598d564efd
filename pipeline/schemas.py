"""The JSON Schemas in `schemas/`: the single source of truth for every record shape.

Validators are compiled once with fastjsonschema (it generates Python code from the schema),
so the runtime check is the schema itself, not a hand-written twin of it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson


def _schema_dir() -> Path:
    # Installed: the package data pipeline.schema_files; from a checkout: ../schemas.
    checkout = Path(__file__).resolve().parent.parent / "schemas"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / "schema_files"


SCHEMA_DIR = _schema_dir()

Validator = Callable[[Any], Any]
ValidationError = fastjsonschema.JsonSchemaValueException


def schema_path(name: str) -> Path:
    """Path of schema `name` (e.g. "event" or "partners/ga4")."""
    return SCHEMA_DIR / f"{name}.schema.json"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema `name`."""
    schema: dict[str, Any] = orjson.loads(schema_path(name).read_bytes())
    return schema


def _resolve(uri: str) -> dict[str, Any]:
    return load_schema(uri.rsplit("/", 1)[-1].removesuffix(".schema.json"))


@cache
def validator(name: str) -> Validator:
    """A compiled validator for schema `name`; raises ValidationError on a bad record."""
    handlers = {"https": _resolve, "http": _resolve, "": _resolve}
    compiled: Validator = fastjsonschema.compile(load_schema(name), handlers=handlers)
    return compiled
