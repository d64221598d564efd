"""`python -m tests.integration.faulty_worker FAULT worker --config FILE`: the worker command
with a fault injected, for tests that a worker that fails is gone, not hung.

FAULT is one of:
- `bug`: applying an event of device "boom" raises (a bug in the session rules).
- `faust-crash`: a message keyed "crash" makes Faust's consumer service crash (as Faust's own
  services do when something breaks under them), outside the worker's code.
- `transient`: the first checkpoint with records to write times out (a transient Kafka error)
  after its transaction has begun: the worker must go back to its last commit and replay.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import RequestTimedOutError
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from pipeline.cli.main import main as run_command
from pipeline.processing.processor import Processor
from pipeline.sinks.kafka import TransactionalSink
from pipeline.streaming.worker import SessionWorker

_tasks: list[asyncio.Future[Any]] = []


def _inject_bug() -> None:
    apply = Processor.apply

    def failing_apply(self: Processor, states: Any, event: Any, out: Any) -> Any:
        if event.get("device_id") == "boom":
            raise RuntimeError("injected bug")
        return apply(self, states, event, out)

    Processor.apply = failing_apply  # type: ignore[method-assign]


def _inject_faust_crash() -> None:
    on_fetch = SessionWorker.on_fetch

    async def crashing_on_fetch(
        self: SessionWorker, tp: TP, records: Sequence[ConsumerRecord]
    ) -> None:
        await on_fetch(self, tp, records)
        if any(record.key == b"crash" for record in records):
            consumer: Any = self.app.consumer
            _tasks.append(asyncio.ensure_future(consumer.crash(RuntimeError("injected crash"))))

    SessionWorker.on_fetch = crashing_on_fetch  # type: ignore[method-assign]


def _inject_transient() -> None:
    flush = TransactionalSink.flush
    failed: list[bool] = []

    async def failing_flush(self: TransactionalSink) -> None:
        if not failed and not self.empty:
            failed.append(True)
            await self.ship()  # some of the transaction's batches on their way
            raise RequestTimedOutError("injected timeout")
        await flush(self)

    TransactionalSink.flush = failing_flush  # type: ignore[method-assign]


FAULTS = {"bug": _inject_bug, "faust-crash": _inject_faust_crash, "transient": _inject_transient}


def main(argv: Sequence[str]) -> int:
    fault, *command = argv
    FAULTS[fault]()
    return run_command(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
