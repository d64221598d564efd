"""Keyed streams: one shard's records for one output, each with the sequence key it sorts by.

A stream is three files in a shard's work directory: `<name>.jsonl` (the serialized records,
one a line, in the shard's order), `<name>.keys` (one signed 64-bit key per line, in machine
order) and, for the pipeline's own records, `<name>.flags` (one byte per line: 1 for a session
record). Keys never decrease within a stream, and two shards never share a key, so merging the
shards' streams by key gives the single-process order (`pipeline.sharded.merge`).

Keys (`SequenceKeys`): what `--jobs 1` writes while reading line L of the input gets
`L * stride`; what it writes for event p of a batch whose events belong to several shards gets
`L * stride + 1 + p` (p: the event's position, or a rejection's batch index); what it writes at
the end of the input for a device first seen under key K gets `END + K`.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, repeat
from operator import sub
from pathlib import Path
from typing import IO

KEY_TYPE = "q"
END = 1 << 62  # keys of the end-of-input records start here
_READ_BYTES = 256 << 10  # per shard and stream while merging: small writes are faster here


@dataclass(frozen=True, slots=True)
class SequenceKeys:
    """The key layout for an input whose messages have at most `max_events` events."""

    stride: int

    @classmethod
    def for_message_bytes(cls, max_event_bytes: int) -> SequenceKeys:
        # A batch event takes at least 3 bytes ("{}" and a comma): this bounds the positions.
        return cls(stride=max_event_bytes // 3 + 2)

    def line(self, number: int) -> int:
        """The key of what line `number` gives, when one shard writes all of it."""
        key = number * self.stride
        if key + self.stride >= END:
            raise ValueError(f"line {number} is past what --jobs can order; use --jobs 1")
        return key


def expand(mark_keys: list[int], ends: list[int]) -> array[int]:
    """One key per record: records [ends[i-1], ends[i]) of a list got `mark_keys[i]`."""
    counts = map(sub, ends, chain((0,), ends))
    return array(KEY_TYPE, chain.from_iterable(map(repeat, mark_keys, counts)))


class StreamWriter:
    """Appends records and their keys (and flags) to one stream of a shard."""

    def __init__(self, directory: Path, name: str, *, flagged: bool = False) -> None:
        self.data = (directory / f"{name}.jsonl").open("wb")
        self.keys = (directory / f"{name}.keys").open("wb")
        self.flags = (directory / f"{name}.flags").open("wb") if flagged else None

    def write(self, lines: list[bytes], keys: array[int], flags: list[bool] | None = None) -> None:
        """Append `lines` (each ending in a newline) with one key each (and one flag each)."""
        if len(keys) != len(lines):
            raise AssertionError(f"{len(lines)} records but {len(keys)} keys")
        if not lines:
            return
        self.data.write(b"".join(lines))
        keys.tofile(self.keys)
        if self.flags is not None and flags is not None:
            self.flags.write(bytes(flags))

    def close(self) -> None:
        """Close the stream's files."""
        for handle in (self.data, self.keys, self.flags):
            if handle is not None:
                handle.close()


@dataclass(slots=True)
class Chunk:
    """Consecutive records of one stream: lines without their newlines, keys, flags."""

    lines: list[bytes]
    keys: list[int]
    flags: bytes


class StreamReader:
    """Reads one shard's stream a bounded chunk at a time."""

    def __init__(self, directory: Path, name: str, *, flagged: bool = False) -> None:
        self._data: IO[bytes] = (directory / f"{name}.jsonl").open("rb")
        self._keys: IO[bytes] = (directory / f"{name}.keys").open("rb")
        self._flags: IO[bytes] | None = (
            (directory / f"{name}.flags").open("rb") if flagged else None
        )
        self._rest = b""

    def chunks(self) -> Iterator[Chunk]:
        """The stream's records, in order, a chunk at a time (none empty)."""
        try:
            while block := self._data.read(_READ_BYTES):
                lines = (self._rest + block).split(b"\n")
                self._rest = lines.pop()
                if not lines:
                    continue  # a record longer than a read: complete it with the next
                keys: array[int] = array(KEY_TYPE)
                keys.frombytes(self._keys.read(keys.itemsize * len(lines)))
                flags = self._flags.read(len(lines)) if self._flags is not None else b""
                if len(keys) != len(lines):
                    raise AssertionError(f"{len(lines)} records but {len(keys)} keys")
                yield Chunk(lines, keys.tolist(), flags)
            if self._rest:
                raise AssertionError("a stream's last record has no newline")
        finally:
            self.close()

    def close(self) -> None:
        """Close the stream's files."""
        for handle in (self._data, self._keys, self._flags):
            if handle is not None:
                handle.close()
