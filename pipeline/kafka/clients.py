"""The worker's Kafka clients: its producers, and which of their failures pass.

One transactional producer per worker instance (its transactional id is stable over restarts,
so a restarted worker fences its predecessor), and a plain one for the changelog's checkpoint
markers (`pipeline.streaming.recovery`).
"""

from __future__ import annotations

import logging

import aiokafka
from aiokafka.errors import (
    BrokerNotAvailableError,
    ConcurrentTransactions,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
)

from pipeline.config import Config
from pipeline.kafka.topics import changelog_max_message_bytes, max_message_bytes

# As Kafka Streams does: a killed worker's open transaction blocks readers of its partitions
# until the broker aborts it, this long after it began (Kafka's default is 60 s).
TRANSACTION_TIMEOUT_MS = 10_000

# Kafka errors that pass once the brokers are back, though aiokafka does not mark them retriable.
_TRANSIENT_KAFKA_ERRORS = (
    KafkaTimeoutError,
    BrokerNotAvailableError,
    ConcurrentTransactions,
    RebalanceInProgressError,
)


def is_transient(error: BaseException) -> bool:
    """A failure that passes once the brokers answer again (unreachable, a request timed out,
    a leader or coordinator moving or loading): worth a retry. Any other one is fatal: fenced
    by a newer instance, refused (authorization, an invalid transaction state), or a bug."""
    if isinstance(error, KafkaError):
        return bool(error.retriable) or isinstance(error, _TRANSIENT_KAFKA_ERRORS)
    return isinstance(error, TimeoutError | ConnectionError)


def max_request_size(config: Config) -> int:
    """As large as the largest record any topic of the worker takes (its table's changelog)."""
    return max(max_message_bytes(config), changelog_max_message_bytes(config))


def transactional_producer(config: Config) -> aiokafka.AIOKafkaProducer:
    """This worker's producer: one transactional id per worker instance, stable over restarts."""
    return aiokafka.AIOKafkaProducer(
        transactional_id=f"{config.worker.app_id}-{config.worker.instance_id}",
        enable_idempotence=True,
        transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        linger_ms=5,
        # A batch of several records must fit the smallest topic too (a lone record bigger
        # than this still goes alone: the size check of TransactionalSink.add bounds it).
        max_batch_size=min(256 * 1024, config.limits.max_record_bytes),
        max_request_size=max_request_size(config),
        **config.kafka.client_options(),
    )


def marker_producer(config: Config) -> aiokafka.AIOKafkaProducer:
    """A plain idempotent producer, for the changelog's checkpoint markers."""
    return aiokafka.AIOKafkaProducer(
        enable_idempotence=True,
        max_request_size=max_request_size(config),
        **config.kafka.client_options(),
    )


def quiet_client_logs() -> None:
    """Keep aiokafka's per-send DEBUG lines from being built at all."""
    # Building those records cost ~15 % of the worker's time even when nothing printed them.
    for name in ("aiokafka", "kafka"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))
