"""The JSON Schemas in `schemas/`: the single source of truth for every record shape.

The runtime check is the schema itself, compiled once by jsonschema-rs (a Rust validator):
about 0.4 µs for a typical event, against 1.6 µs for fastjsonschema's generated Python (see
BENCHMARKS.md). Only a failing document is validated a second time, to explain the failure.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson


def _schema_dir() -> Path:
    # Installed: the package data pipeline.schema_files; from a checkout: ../schemas.
    checkout = Path(__file__).resolve().parents[2] / "schemas"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parents[1] / "schema_files"


SCHEMA_DIR = _schema_dir()


def schema_path(name: str) -> Path:
    """Path of schema `name` (e.g. "event" or "partners/ga4")."""
    return SCHEMA_DIR / f"{name}.schema.json"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema `name`."""
    schema: dict[str, Any] = orjson.loads(schema_path(name).read_bytes())
    return schema


def _retrieve(uri: str) -> dict[str, Any]:
    # Schemas refer to each other by file name under https://sessionize.dev/schemas/.
    return load_schema(uri.rsplit("/", 1)[-1].removesuffix(".schema.json"))


class Validator:
    """A compiled schema: a fast yes/no, and an explanation for a no."""

    __slots__ = ("_compiled", "_schema", "is_valid")

    def __init__(self, schema: dict[str, Any]) -> None:
        self._schema = schema
        self._compiled = jsonschema_rs.validator_for(schema, retriever=_retrieve)
        self.is_valid = self._compiled.is_valid

    def explain(self, document: Any, root: str = "event") -> str:
        """Why `document` does not validate: the first error, with where it is."""
        try:
            self._compiled.validate(document)
        except jsonschema_rs.ValidationError as error:
            where = ".".join([root, *(str(part) for part in error.instance_path)])
            return f"{where}: {self._comment(list(error.schema_path)) or error.message}"
        except ValueError:  # the validator's error report stops at 255 levels of nesting
            return f"{root}: does not match its schema, and nests too deep to say where"
        return "valid"

    def _comment(self, schema_path: list[str | int]) -> str | None:
        # An anyOf's first branch carries its error message in $comment (see event.schema.json):
        # "not valid under any of the schemas listed" says nothing a person can act on.
        if not schema_path or schema_path[-1] != "anyOf":
            return None
        node: Any = self._schema
        for part in schema_path:
            node = node[part]
        comment = node[0].get("$comment") if node else None
        return comment if isinstance(comment, str) else None


@cache
def validator(name: str) -> Validator:
    """The compiled validator of schema `name`."""
    return Validator(load_schema(name))
