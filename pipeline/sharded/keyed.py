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

import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, repeat
from operator import sub
from pathlib import Path
from typing import IO

KEY_TYPE = "q"
END = 1 << 62  # keys of the end-of-input records start here
ABORTED = "aborted"  # in the run's work directory when a shard failed
_POLL_S = 0.005  # how often the merge looks again for what a shard has not written yet
_READ_BYTES = 256 << 10  # per shard and stream while merging: small writes are faster here


@dataclass(frozen=True, slots=True)
class SequenceKeys:
    """The key layout for an input whose messages have at most `max_events` events."""

    stride: int

    @classmethod
    def for_message_bytes(cls, max_event_bytes: int) -> SequenceKeys:
        # A batch event takes at least 3 bytes ("{}" and a comma): this bounds the positions.
        return cls(stride=max_event_bytes // 3 + 2)

    def check(self, number: int) -> None:
        """Refuse line `number` when its keys would reach `END` (some 10^13 lines by default)."""
        if (number + 1) * self.stride >= END:
            raise ValueError(f"line {number} is past what --jobs can order; use --jobs 1")


def expand(mark_keys: list[int], ends: list[int]) -> array[int]:
    """One key per record: records [ends[i-1], ends[i]) of a list got `mark_keys[i]`."""
    counts = map(sub, ends, chain((0,), ends))
    return array(KEY_TYPE, chain.from_iterable(map(repeat, mark_keys, counts)))


class StreamWriter:
    """Appends records and their keys (and flags) to one stream of a shard.

    The merge reads a stream while it is written: each batch's keys and flags reach the file
    before its records do, and `close` leaves a `<name>.done` file when the stream is whole.
    """

    def __init__(self, directory: Path, name: str, *, flagged: bool = False) -> None:
        self.keys = (directory / f"{name}.keys").open("wb")
        self.flags = (directory / f"{name}.flags").open("wb") if flagged else None
        self.data = (directory / f"{name}.jsonl").open("wb")
        self.done = directory / f"{name}.done"

    def write(self, data: bytes, keys: array[int], flags: list[bool] | None = None) -> None:
        """Append `data`, records as JSON Lines, with one key each (and one flag each)."""
        records = data.count(b"\n")
        if records != len(keys):
            raise AssertionError(f"{records} records but {len(keys)} keys")
        if not data:
            return
        keys.tofile(self.keys)
        self.keys.flush()
        if self.flags is not None and flags is not None:
            self.flags.write(bytes(flags))
            self.flags.flush()
        self.data.write(data)
        self.data.flush()

    def close(self) -> None:
        """Close the stream's files and say it is whole (also after a failure: the merge
        then ends, and the shard's error is what the run reports)."""
        for handle in (self.keys, self.flags, self.data):
            if handle is not None:
                handle.close()
        self.done.touch()


class Aborted(Exception):
    """The run failed elsewhere: a merge stops waiting for its shards."""


@dataclass(slots=True)
class Chunk:
    """Consecutive records of one stream: lines (each ending in its newline), keys, flags."""

    lines: list[bytes]
    keys: list[int]
    flags: bytes


class StreamReader:
    """Reads one shard's stream a bounded chunk at a time, while the shard writes it."""

    def __init__(self, directory: Path, name: str, *, flagged: bool = False) -> None:
        self._aborted = directory.parent / ABORTED  # the run failed: stop waiting
        self._keys = self._open_when_there(directory / f"{name}.keys")
        self._flags = self._open_when_there(directory / f"{name}.flags") if flagged else None
        self._data = self._open_when_there(directory / f"{name}.jsonl")
        self._done = directory / f"{name}.done"
        self._rest = b""

    def chunks(self) -> Iterator[Chunk]:
        """The stream's records, in order, a chunk at a time (none empty)."""
        try:
            for block in self._blocks():
                # orjson writes no raw CR or LF inside a record: each line is one record
                lines = (self._rest + block).splitlines(keepends=True)
                self._rest = lines.pop() if not lines[-1].endswith(b"\n") else b""
                if not lines:
                    continue  # a record longer than a read: complete it with the next
                keys: array[int] = array(KEY_TYPE)
                size = keys.itemsize * len(lines)
                keys.frombytes(self._read_exactly(self._keys, size))
                flags = self._read_exactly(self._flags, len(lines)) if self._flags else b""
                yield Chunk(lines, keys.tolist(), flags)
            if self._rest:
                raise AssertionError("a stream's last record has no newline")
        finally:
            self.close()

    def _blocks(self) -> Iterator[bytes]:
        """The data as it comes, until the stream is whole and read."""
        while True:
            if block := self._data.read(_READ_BYTES):
                yield block
            elif self._done.exists():
                # whole: what the shard wrote before saying so is all there is
                while block := self._data.read(_READ_BYTES):
                    yield block
                return
            else:
                self._wait()

    def _wait(self) -> None:
        if self._aborted.exists():
            raise Aborted("a shard failed")
        time.sleep(_POLL_S)

    def _open_when_there(self, path: Path) -> IO[bytes]:
        """`path` for reading, once its shard has made it."""
        while True:
            try:
                return path.open("rb")
            except FileNotFoundError:
                self._wait()

    def _read_exactly(self, handle: IO[bytes], size: int) -> bytes:
        """`size` bytes of keys or flags: written before their records, so they are there or
        about to be."""
        data = handle.read(size)
        while len(data) < size:
            whole = self._done.exists()  # (before the read: a whole stream holds all it will)
            more = handle.read(size - len(data))
            if not more:
                if whole:
                    raise AssertionError(f"a stream has records without keys: {handle.name}")
                self._wait()
            data += more
        return data

    def close(self) -> None:
        """Close the stream's files."""
        for handle in (self._data, self._keys, self._flags):
            if handle is not None:
                handle.close()
