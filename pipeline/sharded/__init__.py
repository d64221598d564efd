"""Offline mode on every core (`sessionize run --jobs N`): the same bytes as one process.

Sessions are independent per device, so N processes each run the rules for the devices whose
id hashes to them (`pipeline.sharded.shard`), every one reading the whole input. Each writes
its records with the key that says where a single run would have written them (the input line,
the event's position in a batch, or the device's first line for what the end of the input
closes: `pipeline.sharded.keyed`) to files of its own; a k-way merge on those keys writes the
output directory (`pipeline.sharded.merge`), one process per output file, following the
shards' files as they grow. Memory stays bounded: the shards flush every few thousand records
and the merge holds a chunk per shard.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import IO

from pipeline.config import Config
from pipeline.offline import Summary
from pipeline.processing.processor import Processor
from pipeline.sharded.keyed import ABORTED
from pipeline.sharded.merge import DEAD_LETTER_STREAM, merge_pipeline, merge_stream, partner_stream
from pipeline.sharded.shard import ShardTask, run_shard, shard_of
from pipeline.sinks.files import (
    DEAD_LETTER_FILE,
    ENRICHED_FILE,
    PARTNERS_DIR,
    SESSIONS_FILE,
    SUMMARY_FILE,
    partner_file,
)

__all__ = ["run_sharded", "shard_of", "start_method"]


def start_method() -> str:
    """How the processes start. The workers take nothing from the parent but their picklable
    task, so any method gives the same outputs; fork starts in milliseconds where spawn
    re-imports the package in each process (~0.5 s here), but is safe only while this
    process has no other thread, and exists only on POSIX."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "spawn"


def run_sharded(
    source: IO[bytes],
    output_dir: Path,
    config: Config,
    now_ms: int,
    jobs: int,
    method: str | None = None,
) -> Summary:
    """`pipeline.offline.run_offline` over `jobs` processes: the same files, byte for byte.

    `method`: how the processes start (default: `start_method()`).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    output_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=".sessionize-jobs-", dir=output_dir))
    try:
        input_path = _input_path(source, work_dir)
        tasks = [
            ShardTask(input_path, work_dir, config, now_ms, jobs, index) for index in range(jobs)
        ]
        context = multiprocessing.get_context(method or start_method())
        shard_dirs = [work_dir / f"shard-{index}" for index in range(jobs)]
        outputs = Processor(config.sessions, config.partners).new_outputs()
        merges = 2 + len(outputs.partners)  # they mostly wait: they follow the shards' files
        with ProcessPoolExecutor(max_workers=jobs + merges, mp_context=context) as pool:
            merged = _merges(pool, shard_dirs, output_dir, config)
            shards = [pool.submit(run_shard, task) for task in tasks]
            try:
                summaries = [shard.result() for shard in shards]
            except BaseException:
                (work_dir / ABORTED).touch()  # the merges stop waiting for it
                raise
            for merge in merged:
                merge.result()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    summary = Summary()
    for part in summaries:
        summary.add(part)
    (output_dir / SUMMARY_FILE).write_bytes(summary.to_json() + b"\n")
    return summary


def _input_path(source: IO[bytes], work_dir: Path) -> Path:
    """The input as a file every shard can open: itself, or a copy (stdin, a pipe)."""
    name = getattr(source, "name", None)
    is_file = isinstance(name, str) and os.path.isfile(name)
    if is_file and os.path.samestat(os.stat(str(name)), os.fstat(source.fileno())):
        return Path(str(name))
    copy = work_dir / "input.jsonl"
    with copy.open("wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)
    return copy


def _merges(
    pool: ProcessPoolExecutor, shard_dirs: list[Path], output_dir: Path, config: Config
) -> list[Future[None]]:
    """One merge per output file (the pipeline's records feed three: one merge), in parallel."""
    outputs = Processor(config.sessions, config.partners).new_outputs()
    (output_dir / PARTNERS_DIR).mkdir(parents=True, exist_ok=True)
    verbatim = [partner_file(output_dir, name) for name in outputs.verbatim]
    merges = [
        pool.submit(
            merge_pipeline,
            shard_dirs,
            output_dir / SESSIONS_FILE,
            output_dir / ENRICHED_FILE,
            verbatim,
        ),
        pool.submit(merge_stream, shard_dirs, DEAD_LETTER_STREAM, output_dir / DEAD_LETTER_FILE),
    ]
    for name in outputs.partners:
        target = partner_file(output_dir, name)
        merges.append(pool.submit(merge_stream, shard_dirs, partner_stream(name), target))
    return merges
