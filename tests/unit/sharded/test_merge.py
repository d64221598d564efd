"""The k-way merge of keyed streams (`pipeline.sharded.merge`): key order, each shard's own
order among equal keys, and chunks smaller than one record."""

from __future__ import annotations

import random
from array import array
from pathlib import Path

import pytest

from pipeline.sharded import keyed
from pipeline.sharded.keyed import KEY_TYPE, StreamReader, StreamWriter, expand
from pipeline.sharded.merge import merge_stream, merged_chunks


def write_shards(tmp_path: Path, records: list[tuple[int, bytes]], shards: int) -> list[Path]:
    """Deal `records` (key, line) out to `shards` streams, each keeping its keys in order."""
    directories = [tmp_path / f"shard-{i}" for i in range(shards)]
    writers = []
    for directory in directories:
        directory.mkdir()
        writers.append(StreamWriter(directory, "s"))
    rng = random.Random(7)
    owner_of_key: dict[int, int] = {}
    for key, line in records:  # one shard per key: as with real keys
        shard = owner_of_key.setdefault(key, rng.randrange(shards))
        writers[shard].write(line + b"\n", array(KEY_TYPE, [key]))
    for writer in writers:
        writer.close()
    return directories


def in_order(count: int) -> list[tuple[int, bytes]]:
    """Records in key order, some keys held by several records, lines of every length."""
    rng = random.Random(3)
    key = 0
    records = []
    for index in range(count):
        key += rng.choice((0, 0, 1, 5))
        records.append((key, b"r%d:" % index + b"x" * rng.randrange(40)))
    return records


@pytest.mark.parametrize("read_bytes", [7, 100, 1 << 16])
def test_merge_gives_key_order_and_keeps_each_shards_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int
) -> None:
    monkeypatch.setattr(keyed, "_READ_BYTES", read_bytes)
    records = in_order(3000)
    directories = write_shards(tmp_path, records, 3)
    target = tmp_path / "merged.jsonl"
    merge_stream(directories, "s", target)
    assert target.read_bytes() == b"".join(line + b"\n" for _, line in records)


def test_chunks_are_bounded_by_the_read_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyed, "_READ_BYTES", 200)
    directories = write_shards(tmp_path, in_order(3000), 2)
    readers = [StreamReader(directory, "s") for directory in directories]
    sizes = [len(lines) for lines, _ in merged_chunks(readers)]
    assert sum(sizes) == 3000 and max(sizes) <= 2 * (200 // 4)  # lines are at least 4 bytes


def test_expand_gives_each_record_its_marks_key() -> None:
    assert list(expand([10, 20, 30], [2, 2, 5])) == [10, 10, 30, 30, 30]
