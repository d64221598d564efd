"""The k-way merge of the shards' keyed streams into the output directory's files.

Each shard's stream is already in key order, so the merge only interleaves: it takes from every
shard the records up to the smallest last key among the chunks in hand (`bound`: no shard can
still hold a smaller one), sorts those by key (Timsort merges the shards' sorted runs in linear
time) and writes them. Memory stays at about one read chunk per shard.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from itertools import chain, compress
from operator import not_
from pathlib import Path
from typing import IO

from pipeline.sharded.keyed import Chunk, StreamReader

PIPELINE_STREAM = "pipeline"
DEAD_LETTER_STREAM = "dead_letter"


def partner_stream(name: str) -> str:
    """The stream of a formatted partner's records."""
    return f"partner-{name}"


def merged_chunks(readers: list[StreamReader]) -> Iterator[tuple[list[bytes], bytes]]:
    """The records of every reader's stream in key order, a chunk at a time: (lines, flags)."""
    sources = [reader.chunks() for reader in readers]
    held: list[tuple[Chunk, int] | None] = [_first(source) for source in sources]
    while True:
        live = [(index, entry) for index, entry in enumerate(held) if entry is not None]
        if not live:
            return
        bound = min(chunk.keys[-1] for _, (chunk, _start) in live)
        pieces = []
        for index, (chunk, start) in live:
            cut = bisect_right(chunk.keys, bound, lo=start)
            if cut == start:
                continue
            pieces.append(_piece(chunk, start, cut))
            held[index] = (chunk, cut) if cut < len(chunk.keys) else _first(sources[index])
        yield _interleave(pieces)


def _first(source: Iterator[Chunk]) -> tuple[Chunk, int] | None:
    chunk = next(source, None)
    return None if chunk is None else (chunk, 0)


def _piece(chunk: Chunk, start: int, cut: int) -> Chunk:
    if start == 0 and cut == len(chunk.keys):
        return chunk
    return Chunk(chunk.lines[start:cut], chunk.keys[start:cut], chunk.flags[start:cut])


def _interleave(pieces: list[Chunk]) -> tuple[list[bytes], bytes]:
    if len(pieces) == 1:
        return pieces[0].lines, pieces[0].flags
    keys = list(chain.from_iterable(piece.keys for piece in pieces))
    lines = list(chain.from_iterable(piece.lines for piece in pieces))
    flags = b"".join(piece.flags for piece in pieces)
    order = sorted(range(len(keys)), key=keys.__getitem__)  # stable: a shard keeps its order
    merged_flags = bytes(map(flags.__getitem__, order)) if flags else b""
    return list(map(lines.__getitem__, order)), merged_flags


def _write_lines(handle: IO[bytes], lines: list[bytes]) -> None:
    if lines:
        handle.write(b"".join(lines))


def merge_pipeline(
    shard_dirs: list[Path], sessions: Path, enriched: Path, verbatim: list[Path]
) -> None:
    """Merge the pipeline's records: session records to `sessions`, the others to `enriched`,
    all of them to each of `verbatim` (the partners taking them as they are)."""
    readers = [StreamReader(d, PIPELINE_STREAM, flagged=True) for d in shard_dirs]
    handles = [path.open("wb") for path in (sessions, enriched, *verbatim)]
    try:
        sessions_file, enriched_file, *verbatim_files = handles
        for lines, flags in merged_chunks(readers):
            if verbatim_files:
                data = b"".join(lines)
                for handle in verbatim_files:
                    handle.write(data)
            if any(flags):
                _write_lines(sessions_file, list(compress(lines, flags)))
            _write_lines(enriched_file, list(compress(lines, map(not_, flags))))
    finally:
        for handle in handles:
            handle.close()


def merge_stream(shard_dirs: list[Path], name: str, target: Path) -> None:
    """Merge the shards' stream `name` into the file `target`."""
    readers = [StreamReader(d, name) for d in shard_dirs]
    with target.open("wb") as handle:
        for lines, _ in merged_chunks(readers):
            _write_lines(handle, lines)
