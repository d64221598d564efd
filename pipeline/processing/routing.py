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

from pipeline.engine import Record
from pipeline.processing.processor import Outputs
from pipeline.vocabulary import SESSION_RECORD_TYPES

Serializer = Callable[[Record], bytes]


@dataclass(slots=True)
class RoutedOutputs:
    """A batch of outputs, serialized: valid until its Outputs is cleared.

    `lines[i]` is `records[i]` serialized, `is_session[i]` whether it goes to the sessions
    output (else the enriched one); `partner_lines` holds each formatted partner's records
    serialized, for the partners that have any.
    """

    records: list[Record]
    lines: list[bytes]
    is_session: list[bool]
    partner_records: dict[str, list[Record]]
    partner_lines: dict[str, list[bytes]]

    def sessions(self) -> list[bytes]:
        """The lines of the sessions output, in order."""
        return list(compress(self.lines, self.is_session))

    def enriched(self) -> list[bytes]:
        """The lines of the enriched output, in order."""
        return list(compress(self.lines, map(not_, self.is_session)))

    def session_records(self) -> Iterator[Record]:
        """The session records, in order."""
        return compress(self.records, self.is_session)


def route(out: Outputs, serialize: Serializer) -> RoutedOutputs:
    """Serialize every record of `out` once and say which output carries it."""
    records = out.pipeline_records
    partners = out.partners
    return RoutedOutputs(
        records,
        list(map(serialize, records)),
        [record["type"] in SESSION_RECORD_TYPES for record in records],
        partners,
        {
            name: list(map(serialize, formatted))
            for name, formatted in partners.items()
            if formatted
        },
    )
