"""The pipeline's topics: which exist, and creating the missing ones.

Changelog and repartition topics are Faust's business; these are the input and output topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)

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


class ClientLog(logging.Handler):
    """What aiokafka logs, kept off stderr, and the errors it names: a client that cannot
    connect logs why ("Unable connect to ...: <error>") and raises only "Unable to bootstrap"."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple):
            self.errors.extend(arg for arg in record.args if isinstance(arg, BaseException))


@contextlib.contextmanager
def quiet_client_log() -> Iterator[ClientLog]:
    """While open, aiokafka's log lines print nowhere (our one-line errors say what happened)."""
    client_log = logging.getLogger("aiokafka")
    handler = ClientLog()
    propagate = client_log.propagate
    client_log.addHandler(handler)
    client_log.propagate = False
    try:
        yield handler
    finally:
        client_log.removeHandler(handler)
        client_log.propagate = propagate


def refusal(config: Config, errors: Sequence[BaseException]) -> str | None:
    """One line for a broker that answered but refused the connection (SASL, TLS), or None."""
    kafka = config.kafka
    where = f"Kafka at {kafka.bootstrap}"
    for error in reversed(errors):
        if isinstance(error, UnsupportedSaslMechanismError):
            accepted = re.search(r"Enabled mechanisms are: \[(.*)\]", str(error))
            offer = f" (it accepts {accepted[1].replace(chr(39), '')})" if accepted else ""
            return f"{where} refused SASL mechanism {kafka.sasl_mechanism}{offer}"
        if isinstance(error, SaslAuthenticationFailed | AuthenticationFailedError):
            said = str(error.args[0]) if error.args and isinstance(error.args[0], str) else ""
            if kafka.sasl_password:
                said = said.replace(kafka.sasl_password, "***")
            said = f": {said.splitlines()[0][:120]}" if said.strip() else ""
            return (
                f"{where} refused to authenticate user '{kafka.sasl_username}' "
                f"with {kafka.sasl_mechanism}{said}"
            )
        if isinstance(error, IllegalSaslStateError):
            return (
                f"{where} does not take SASL on this listener "
                f"(security_protocol {kafka.security_protocol}): the broker refused the handshake"
            )
        if isinstance(error, ssl.SSLError):
            return f"TLS with {where} failed ({error.reason or type(error).__name__})"
        if isinstance(error, ConnectionResetError) and kafka.security_protocol.endswith("SSL"):
            return (
                f"TLS with {where} failed: the broker closed the connection during the "
                "handshake (a listener without TLS?)"
            )
    return None


async def _admin(config: Config) -> AIOKafkaAdminClient:
    options = config.kafka.client_options()
    admin = AIOKafkaAdminClient(request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000), **options)
    started = time.monotonic()
    with quiet_client_log() as client_log:
        try:
            await asyncio.wait_for(admin.start(), CONNECT_TIMEOUT_S)
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
