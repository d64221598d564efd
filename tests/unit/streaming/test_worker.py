"""Which failures the worker recovers from (a retry), and which end it."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    InvalidTxnState,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    NotLeaderForPartitionError,
    ProducerFenced,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from pipeline.kafka.clients import is_transient


@pytest.mark.parametrize(
    "error",
    [
        KafkaConnectionError("closed"),
        NodeNotReadyError("not ready"),
        RequestTimedOutError(),
        NotLeaderForPartitionError(),
        CoordinatorLoadInProgressError(),
        KafkaTimeoutError(),
        TimeoutError(),
        ConnectionResetError(),
    ],
    ids=type,
)
def test_errors_that_pass_once_the_brokers_answer_are_retried(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ProducerFenced(),
        InvalidTxnState(),
        TopicAuthorizationFailedError(),
        TransactionalIdAuthorizationFailed(),
        MessageSizeTooLargeError(),
        KafkaError("Unexpected error during batch delivery"),
        RuntimeError("a bug"),
        KeyError("a bug"),
    ],
    ids=type,
)
def test_fenced_refused_and_bugs_are_fatal(error: BaseException) -> None:
    assert not is_transient(error)
