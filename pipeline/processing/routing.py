"""Which output carries each record of a batch, with every record serialized once.

The pipeline's records (`Outputs.pipeline_records`) go to the sessions output (session_start,
session_end) or the enriched output (the rest), and whole to each partner taking them verbatim;
every other partner has its own formatted records. Offline mode writes a `RoutedOutputs` to
files (`pipeline.sinks.files`), the worker to topics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import compress
from operator import not_

import orjson

from pipeline.engine import Record
from pipeline.processing.processor import Outputs
from pipeline.vocabulary import SESSION_RECORD_TYPES

Serializer = Callable[[Record], bytes]


@dataclass(slots=True)
class RoutedOutputs:
    """A batch of outputs, serialized: valid until its Outputs is cleared.

    `lines[i]` is `records[i]` serialized, `is_session[i]` whether it goes to the sessions
    output (else the enriched one); `partner_records` holds each formatted partner's records,
    serialized when they are written, one partner at a time (`values`, `json_lines`).
    """

    records: list[Record]
    lines: list[bytes]
    is_session: list[bool]
    partner_records: dict[str, list[Record]]

    def sessions(self) -> list[bytes]:
        """The lines of the sessions output, in order."""
        return list(compress(self.lines, self.is_session))

    def enriched(self) -> list[bytes]:
        """The lines of the enriched output, in order."""
        return list(compress(self.lines, map(not_, self.is_session)))

    def session_records(self) -> Iterator[Record]:
        """The session records, in order."""
        return compress(self.records, self.is_session)

    def formatted(self) -> Iterator[tuple[str, list[Record]]]:
        """Each formatted partner that has records, with its records."""
        return ((name, records) for name, records in self.partner_records.items() if records)


# In orjson's compact output of a list of dicts, "},{" separates the dicts, and a string with
# "},{" in it shows up as one separator too many. One dumps of the whole list costs about half
# of one dumps per record, and leaves no 4 KB buffer behind each line.
_SEPARATOR = b"},{"


def json_lines(records: list[Record]) -> bytes:
    """Dict records as JSON Lines (each line `orjson.dumps` of one), newline after each."""
    if not records:
        return b""
    blob = orjson.dumps(records)
    if blob.count(_SEPARATOR) == len(records) - 1:
        return blob[1:-1].replace(_SEPARATOR, b"}\n{") + b"\n"
    return b"".join([orjson.dumps(record) + b"\n" for record in records])


def values(records: list[Record]) -> list[bytes]:
    """`orjson.dumps` of each dict record, from one dumps of them all (compact JSON has no
    newline)."""
    if not records:
        return []
    blob = orjson.dumps(records)
    if blob.count(_SEPARATOR) == len(records) - 1:
        return blob[1:-1].replace(_SEPARATOR, b"}\n{").split(b"\n")
    return list(map(orjson.dumps, records))


def route(out: Outputs, serialize: Serializer) -> RoutedOutputs:
    """Serialize every record of `out` once and say which output carries it."""
    records = out.pipeline_records
    return RoutedOutputs(
        records,
        list(map(serialize, records)),
        [record["type"] in SESSION_RECORD_TYPES for record in records],
        out.partners,
    )
