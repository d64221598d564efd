"""CPU per record of the worker's Kafka sink (not a test): `TransactionalSink.add` one record at a
time and `add_values` a device's records per topic, over aiokafka's real record batches.

Each device call queues 6 values of ~300 bytes to each of 7 topics (the shape of a device's
outputs with five partners); 2,000 devices, 5 rounds, median. `--against DIR` times the `add`
of another checkout's `pipeline/sinks/kafka.py` in the same rounds, interleaved.

    .venv/bin/python bench/bench_sink.py --against /work/main
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from pipeline.sinks import kafka

TOPICS = [f"topic-{n}" for n in range(7)]
KEYS = [b"%036d" % n for n in range(2000)]
VALUES = [b"v" * (280 + n) for n in range(6)]
RECORDS = len(KEYS) * len(TOPICS) * len(VALUES)


class Producer:
    """Real batches; nothing is sent."""

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(256 * 1024, 0, is_transactional=1)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(4))


def new_sink(module: ModuleType) -> Any:
    sink = module.TransactionalSink(Producer(), 1_000_000)
    asyncio.run(sink.learn_partitions(TOPICS))
    return sink


def one_by_one(module: ModuleType) -> float:
    sink = new_sink(module)
    started = time.process_time()
    for key in KEYS:
        for topic in TOPICS:
            for value in VALUES:
                sink.add(topic, key, value)
    return time.process_time() - started


def per_topic(module: ModuleType) -> float:
    sink = new_sink(module)
    started = time.process_time()
    for key in KEYS:
        for topic in TOPICS:
            sink.add_values(topic, key, VALUES)
    return time.process_time() - started


def load(checkout: Path) -> ModuleType:
    """Another checkout's sink module."""
    spec = importlib.util.spec_from_file_location(
        "other_sink", checkout / "pipeline/sinks/kafka.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="a checkout whose `add` is timed too")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs: list[tuple[str, Callable[[ModuleType], float], ModuleType]] = []
    if args.against:
        runs.append((f"add, {args.against}", one_by_one, load(args.against)))
    runs += [("add", one_by_one, kafka), ("add_values", per_topic, kafka)]
    seconds: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    for _ in range(args.rounds):
        for label, run, module in runs:
            seconds[label].append(run(module))
    print(f"{RECORDS:,} records per round, {args.rounds} rounds, CPU µs per record:")
    for label, measured in seconds.items():
        median = statistics.median(measured) / RECORDS * 1e6
        print(f"  {label}: median {median:.2f}, min {min(measured) / RECORDS * 1e6:.2f}")


if __name__ == "__main__":
    main()
