"""The pipeline's topics: which exist, and creating the missing ones.

Changelog and repartition topics are Faust's business; these are the input and output topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from pipeline.config import Config

CONNECT_TIMEOUT_S = 15.0


class KafkaUnavailable(Exception):
    """The brokers could not be reached or refused a request; one line for a person."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as the brokers describe it."""

    name: str
    role: str
    partitions: int | None  # None: does not exist
    replication: int | None


def pipeline_topics(config: Config) -> Iterator[tuple[str, str]]:
    """(topic, role) of every topic the pipeline reads or writes."""
    topics = config.topics
    yield topics.input, "input"
    yield topics.sessions, "sessions"
    yield topics.enriched, "enriched events"
    yield topics.deadletter, "dead letters"
    for partner in config.partners:
        yield partner.topic, f"partner {partner.name} ({partner.format})"


async def _admin(config: Config) -> AIOKafkaAdminClient:
    options = config.kafka.client_options()
    admin = AIOKafkaAdminClient(request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000), **options)
    started = time.monotonic()
    try:
        await asyncio.wait_for(admin.start(), CONNECT_TIMEOUT_S)
    except (TimeoutError, KafkaConnectionError, OSError) as exc:
        await admin.close()
        waited = time.monotonic() - started
        raise KafkaUnavailable(
            f"cannot reach Kafka at {config.kafka.bootstrap} after {waited:.1f} s "
            f"({type(exc).__name__})"
        ) from None
    return admin


async def describe(config: Config) -> list[TopicInfo]:
    """The pipeline's topics with their partitions and replication (None where missing)."""
    admin = await _admin(config)
    try:
        names = [name for name, _ in pipeline_topics(config)]
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([n for n in names if n in existing])
    except KafkaError as exc:
        raise KafkaUnavailable(f"Kafka at {config.kafka.bootstrap} refused: {exc}") from None
    finally:
        await admin.close()
    shapes: dict[str, tuple[int, int]] = {}
    for topic in described:
        partitions = topic.get("partitions") or []
        replicas = len(partitions[0].get("replicas", [])) if partitions else 0
        shapes[topic["topic"]] = (len(partitions), replicas)
    return [
        TopicInfo(name, role, *shapes.get(name, (None, None)))
        for name, role in pipeline_topics(config)
    ]


async def ensure_topics(config: Config) -> list[str]:
    """Create the pipeline's missing topics with the configured partitions; returns created."""
    admin = await _admin(config)
    try:
        existing = set(await admin.list_topics())
        wanted = [name for name, _ in pipeline_topics(config) if name not in existing]
        new = [
            NewTopic(name, config.topics.partitions, config.topics.replication)
            for name in dict.fromkeys(wanted)
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
                await admin.create_topics(new)
    except KafkaError as exc:
        raise KafkaUnavailable(f"Kafka at {config.kafka.bootstrap} refused: {exc}") from None
    finally:
        await admin.close()
    return wanted


async def input_partitions(config: Config) -> int:
    """Partitions of the input topic (created with the configured count when missing)."""
    await ensure_topics(config)
    for info in await describe(config):
        if info.role == "input" and info.partitions:
            return info.partitions
    raise KafkaUnavailable(f"input topic '{config.topics.input}' has no partitions")
