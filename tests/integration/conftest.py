"""Fixtures for the real-broker tests (the broker itself comes from tests/conftest.py)."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Pipeline


@pytest.fixture
def pipeline_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., Pipeline]]:
    """Build isolated pipelines: `pipeline_factory(sessions={...}, partitions=3, ...)`."""
    made: list[Pipeline] = []

    def make(**settings: Any) -> Pipeline:
        name = f"t{uuid.uuid4().hex[:10]}"
        directory = tmp_path / name
        directory.mkdir()
        pipeline = Pipeline(kafka_bootstrap, directory, name, settings)
        pipeline.write_config()
        pipeline.create_topics()
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop_workers(signal.SIGKILL)
