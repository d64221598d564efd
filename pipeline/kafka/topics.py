"""The pipeline's topics: which exist, creating the missing ones, and checking their limits.

The input and output topics are the pipeline's (`sessionize topics create` makes them); the
worker also creates its internal ones, the repartition topic and the device table's changelog,
before Faust starts, so that every topic has the max.message.bytes its records need.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    NoError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)

from pipeline.config import Config
from pipeline.kafka.connection import BROKER_TIMEOUT_S, KafkaUnavailable
from pipeline.kafka.outages import quiet_client_log, refusal

TABLE_NAME = "devices"  # the worker's Faust table of device states
MAX_MESSAGE_BYTES = "max.message.bytes"
CLEANUP_POLICY = "cleanup.policy"
# Room in a topic's max.message.bytes past the largest record value: its key (a device id, or
# a table key), headers (where a forwarded event came from) and the record batch framing.
BATCH_OVERHEAD_BYTES = 16_384
# Of that room, what a record batch of one record takes besides key, value and headers.
RECORD_FRAMING_BYTES = 512
# The longest event id (128 characters) in a device state's JSON: every character escaped to
# at most 6 bytes (\u001f), two quotes and a comma.
_STATE_ID_BYTES = 128 * 6 + 3
# A topic just created may not be described at once.
_DESCRIBE_ATTEMPTS = 20


class TopicTooSmall(KafkaUnavailable):
    """An existing topic lacks a setting the pipeline needs (a too small max.message.bytes)."""


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


def repartition_topic(config: Config) -> str:
    """The worker's internal topic of events forwarded to their device's partition."""
    return f"{config.worker.app_id}-events.by-device"


def changelog_topic(config: Config) -> str:
    """The changelog of the worker's device table (named as Faust names it)."""
    return f"{config.worker.app_id}-{TABLE_NAME}-changelog"


def internal_topics(config: Config) -> Iterator[tuple[str, str]]:
    """(topic, role) of the worker's own topics, partitioned like the input."""
    yield repartition_topic(config), "events forwarded by device (internal)"
    yield changelog_topic(config), "device table changelog (internal)"


def max_message_bytes(config: Config) -> int:
    """The `max.message.bytes` the pipeline's topics need: its largest record, with room for
    the key, headers and record batch framing. The input topic too: an event of exactly
    max_event_bytes, keyed, fits."""
    return config.limits.max_record_bytes + BATCH_OVERHEAD_BYTES


def changelog_max_message_bytes(config: Config) -> int:
    """The `max.message.bytes` the device table's changelog needs: one record holds a device's
    state under every profile (the pipeline's rules, and each partner kit timeout's), each with
    up to 2 x dedup_max_ids remembered event ids at their longest, plus the open session's
    attributes and user ids, counted as one record of max_record_bytes."""
    from pipeline.processing.processor import Processor

    profiles = len(Processor(config.sessions, config.partners).profiles)
    ids = 2 * config.sessions.dedup_max_ids * _STATE_ID_BYTES
    return profiles * (ids + config.limits.max_record_bytes) + BATCH_OVERHEAD_BYTES


def required_configs(config: Config) -> dict[str, dict[str, str]]:
    """Topic -> the topic configs the worker needs there: new topics get them, and the worker
    refuses to start on an existing topic that lacks them."""
    room = {MAX_MESSAGE_BYTES: str(max_message_bytes(config))}
    required = {name: room for name, _ in pipeline_topics(config)}
    required[repartition_topic(config)] = room
    required[changelog_topic(config)] = {
        MAX_MESSAGE_BYTES: str(changelog_max_message_bytes(config)),
        CLEANUP_POLICY: "compact",
    }
    return required


async def _admin(config: Config) -> AIOKafkaAdminClient:
    options = config.kafka.client_options()
    admin = AIOKafkaAdminClient(request_timeout_ms=int(BROKER_TIMEOUT_S * 1000), **options)
    started = time.monotonic()
    with quiet_client_log() as client_log:
        try:
            await asyncio.wait_for(admin.start(), BROKER_TIMEOUT_S)
        except (TimeoutError, KafkaConnectionError, OSError) as exc:
            await admin.close()
            waited = time.monotonic() - started
            raise KafkaUnavailable(
                refusal(config, client_log.errors)
                or f"cannot reach Kafka at {config.kafka.bootstrap} after {waited:.1f} s "
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
    """Create the pipeline's missing topics with the configured partitions and the
    max.message.bytes its records need; returns created."""
    admin = await _admin(config)
    try:
        names = [name for name, _ in pipeline_topics(config)]
        return await _create_missing(admin, config, names, config.topics.partitions)
    except KafkaError as exc:
        raise KafkaUnavailable(f"Kafka at {config.kafka.bootstrap} refused: {exc}") from None
    finally:
        await admin.close()


async def prepare_worker_topics(config: Config) -> int:
    """Before a worker starts: create the missing topics (its internal ones with the input's
    partitions), then check that every topic holds the records the worker writes there
    (TopicTooSmall, one line, when one does not). Returns the input's partitions."""
    admin = await _admin(config)
    try:
        names = [name for name, _ in pipeline_topics(config)]
        await _create_missing(admin, config, names, config.topics.partitions)
        described = await describe_when_known(admin, config.topics.input)
        partitions = len(described.get("partitions") or [])
        if not partitions:
            raise KafkaUnavailable(f"input topic '{config.topics.input}' has no partitions")
        internal = [name for name, _ in internal_topics(config)]
        await _create_missing(admin, config, internal, partitions)
        await _check_configs(admin, config, [*names, *internal])
    except KafkaError as exc:
        raise KafkaUnavailable(f"Kafka at {config.kafka.bootstrap} refused: {exc}") from None
    finally:
        await admin.close()
    return partitions


# describe_topics' answer for a topic a broker's metadata does not hold (yet).
UNKNOWN_TOPIC_OR_PARTITION = 3


async def describe_when_known(
    admin: AIOKafkaAdminClient, topic: str, wait_s: float = BROKER_TIMEOUT_S
) -> dict[str, Any]:
    """The description of `topic`, once the broker's metadata has it: KRaft answers a create
    once the controller has committed the topic, before every broker's metadata holds it."""
    deadline = time.monotonic() + wait_s
    while True:
        (described,) = await admin.describe_topics([topic])
        if described.get("error_code") != UNKNOWN_TOPIC_OR_PARTITION:
            return dict(described)
        if time.monotonic() >= deadline:
            return dict(described)
        await asyncio.sleep(0.1)


async def _create_missing(
    admin: AIOKafkaAdminClient, config: Config, names: Sequence[str], partitions: int
) -> list[str]:
    existing = set(await admin.list_topics())
    wanted = [name for name in dict.fromkeys(names) if name not in existing]
    required = required_configs(config)
    new = [
        NewTopic(name, partitions, config.topics.replication, topic_configs=required[name])
        for name in wanted
    ]
    if new:
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
            await admin.create_topics(new)
    return wanted


async def _check_configs(admin: AIOKafkaAdminClient, config: Config, names: Sequence[str]) -> None:
    required = required_configs(config)
    pending = list(dict.fromkeys(names))
    for _ in range(_DESCRIBE_ATTEMPTS):
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(required[name]))
            for name in pending
        ]
        unknown = []
        for response in await admin.describe_configs(resources):
            for resource in response.to_object()["resources"]:
                name = resource["resource_name"]
                error = for_code(resource["error_code"])
                if error is UnknownTopicOrPartitionError:
                    unknown.append(name)  # created a moment ago: not known everywhere yet
                    continue
                if error is not NoError:
                    raise KafkaUnavailable(
                        f"cannot read the configs of topic '{name}': {error.__name__}"
                    )
                found = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
                for setting, wanted in required[name].items():
                    _check_setting(config, name, setting, found.get(setting), wanted)
        if not unknown:
            return
        pending = unknown
        await asyncio.sleep(0.25)
    raise KafkaUnavailable(f"topic '{pending[0]}' does not exist on {config.kafka.bootstrap}")


def _check_setting(
    config: Config, topic: str, setting: str, found: str | None, wanted: str
) -> None:
    if setting == MAX_MESSAGE_BYTES:
        if found is not None and found.isdigit() and int(found) >= int(wanted):
            return
        why = " or more, to hold its largest record"
    elif found is not None and wanted in found.split(","):
        return
    else:
        why = ""
    raise TopicTooSmall(
        f"topic '{topic}' has {setting}={found}; the pipeline needs {setting}={wanted}{why} "
        f"(kafka-configs.sh --bootstrap-server {config.kafka.bootstrap} --alter "
        f"--entity-type topics --entity-name {topic} --add-config {setting}={wanted})"
    )


async def input_partitions(config: Config) -> int:
    """Partitions of the input topic (created with the configured count when missing)."""
    await ensure_topics(config)
    for info in await describe(config):
        if info.role == "input" and info.partitions:
            return info.partitions
    raise KafkaUnavailable(f"input topic '{config.topics.input}' has no partitions")
