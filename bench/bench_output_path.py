"""The worker's output path in one process, without a broker (not a test): the streaming core
over the seeded workload, writing to a `TransactionalSink` of aiokafka's real record batches
(nothing is sent), with a checkpoint's changelog writes every 2,000 messages. For instruction
counts under callgrind: `--stop-before` runs the same start (imports, workload) and stops where
the measured part begins, so the difference of two runs is the core and its output path.

    export PYTHONHASHSEED=0
    valgrind --tool=callgrind .venv/bin/python bench/bench_output_path.py partners 1000
    (the same again with --stop-before: the start alone)

(`PYTHONPATH=<checkout>` runs another checkout's pipeline with the same script.)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from pipeline.config import load_config
from pipeline.sinks.kafka import TransactionalSink
from pipeline.streaming.core import StreamingCore
from pipeline.streaming.partitioning import partition_for
from pipeline.testing import FetchedRecord
from pipeline.workload.generator import WorkloadSpec, generate_keyed_messages

PARTITIONS = 4
FETCH = 500  # records per apply
CHECKPOINT_EVERY = 2_000  # messages
T0 = 1_790_000_000_000


class Producer:
    """Real record batches, built when shipped and counted; nothing is sent."""

    def __init__(self) -> None:
        self.records = 0

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(256 * 1024, 0, is_transactional=1)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        batch._build()
        self.records += batch.record_count()
        return _delivered()


async def _delivered() -> None:
    """A delivery the brokers confirmed."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["partners", "canonical"])
    parser.add_argument("devices", type=int)
    parser.add_argument("--stop-before", action="store_true")
    args = parser.parse_args()
    config = load_config(None, env={})  # all five default partners
    if args.scenario == "canonical":
        config = dataclasses.replace(config, partners=())
    spec = WorkloadSpec(devices=args.devices, events_per_device=10, batch_size=20, seed=1)
    fetched: dict[int, list[FetchedRecord]] = {p: [] for p in range(PARTITIONS)}
    for key, value in generate_keyed_messages(spec):
        partition = partition_for(key.decode(), PARTITIONS) if key else 0
        records = fetched[partition]
        records.append(FetchedRecord("in", partition, len(records), key, value, T0, []))
    core = StreamingCore(config, PARTITIONS, "repartition", clock=lambda: T0)
    producer = Producer()
    sink = TransactionalSink(producer, 1_000_000)  # type: ignore[arg-type]
    topics = config.topics
    keyed = [topics.sessions, topics.enriched, topics.deadletter, "repartition"]
    asyncio.run(sink.learn_partitions(keyed + [p.topic for p in config.partners]))
    core.writer.sink = sink
    core.reindex(frozenset(range(PARTITIONS)))
    if args.stop_before:
        return
    loop = asyncio.new_event_loop()
    started = time.process_time()
    for partition, records in fetched.items():
        for at in range(0, len(records), FETCH):
            core.apply(("in", partition), records[at : at + FETCH], 0)
            loop.run_until_complete(sink.ship())
            if core.uncommitted_messages >= CHECKPOINT_EVERY:
                saved = []
                for key, changelog_partition, value in core.changes():
                    sink.add("changelog", key, value, partition=changelog_partition)
                    saved.append((key, value))
                loop.run_until_complete(sink.flush())
                core.committed(saved)
    loop.run_until_complete(sink.flush())
    cpu = time.process_time() - started
    messages = sum(len(records) for records in fetched.values())
    print(f"{args.scenario}: {messages:,} messages, {producer.records:,} records, {cpu:.2f} s CPU")


if __name__ == "__main__":
    main()
