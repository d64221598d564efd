"""Session-wide fixtures: the real Kafka broker that tests marked ``kafka`` run against."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipeline.kafka import local as localkafka


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a real broker: ``$KAFKA_BOOTSTRAP``, else one started for this test session."""
    if configured := os.environ.get("KAFKA_BOOTSTRAP"):
        yield configured
        return
    broker = localkafka.start(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(autouse=True)
def _broker_for_kafka_tests(request: pytest.FixtureRequest) -> None:
    # Tests marked `kafka` get the broker even when they don't name the fixture.
    if request.node.get_closest_marker("kafka") is not None:
        request.getfixturevalue("kafka_bootstrap")
