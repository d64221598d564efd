"""Reaching the brokers for the command line and the demo: starting clients within a timeout,
admin calls, and the one-line errors (KafkaUnavailable) for brokers that cannot be used.

Light to import (aiokafka only inside the functions): the command line reads BROKER_TIMEOUT_S
while it parses flags, and most commands never talk to Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from pipeline.config import Config


class KafkaUnavailable(Exception):
    """The brokers could not be reached or refused a request; one line for a person."""


# How long a command waits for brokers that do not answer, unless told otherwise (--timeout).
BROKER_TIMEOUT_S = 15.0

_T = TypeVar("_T")


def run_kafka(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that talks to Kafka, with aiokafka's own log lines kept off stderr."""
    # aiokafka logs connection errors itself; with logging unconfigured Python would print
    # them next to our one-line error. Failures reach the user through exceptions instead.
    from pipeline.kafka.outages import quiet_client_log

    with quiet_client_log():
        return asyncio.run(coroutine)


def unreachable(
    config: Config, elapsed_s: float, timed_out: bool, logged: Sequence[BaseException] = ()
) -> KafkaUnavailable:
    """The error for brokers that did not answer, or refused (SASL, TLS) as `logged` shows."""
    from pipeline.kafka.outages import refusal

    why = "no answer" if timed_out else "no broker answered"
    return KafkaUnavailable(
        refusal(config, logged)
        or f"cannot reach Kafka at {config.kafka.bootstrap}: {why} after {elapsed_s:.1f} s"
    )


def unknown_topic(topic: str, config: Config) -> KafkaUnavailable:
    """The error for a topic the brokers do not have."""

    return KafkaUnavailable(
        f"topic '{topic}' does not exist on {config.kafka.bootstrap} "
        "(`sessionize topics create` creates the pipeline's topics)"
    )


async def start_client(client: Any, config: Config, timeout_s: float) -> None:
    """Start an aiokafka producer or consumer; KafkaUnavailable if no broker answers."""
    from aiokafka.errors import KafkaError

    from pipeline.kafka.outages import quiet_client_log

    started = time.monotonic()
    with quiet_client_log() as client_log:
        try:
            await asyncio.wait_for(client.start(), timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await client.stop()
            raise unreachable(
                config, time.monotonic() - started, isinstance(exc, TimeoutError), client_log.errors
            ) from None


async def admin_call(
    config: Config, timeout_s: float, call: Callable[[Config], Coroutine[Any, Any, _T]]
) -> _T:
    """Run one of `pipeline.kafka.topics`' calls; KafkaUnavailable when Kafka is unreachable."""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    from pipeline.kafka.outages import quiet_client_log

    # A bootstrap of our own first: it tells an unreachable broker within `timeout_s`, and how
    # long it took; pipeline.kafka.topics waits longer and reports its whole timeout.
    probe = AIOKafkaClient(**config.kafka.client_options())
    started = time.monotonic()
    with quiet_client_log() as client_log:
        try:
            await asyncio.wait_for(probe.bootstrap(), timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise unreachable(
                config, time.monotonic() - started, isinstance(exc, TimeoutError), client_log.errors
            ) from None
        finally:
            await probe.close()
    try:
        return await asyncio.wait_for(call(config), timeout_s)
    except TimeoutError:
        raise unreachable(config, timeout_s, True) from None
