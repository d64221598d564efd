"""The local broker's files ship with the package, and the Maven project names our version."""

from __future__ import annotations

import base64
import re
import uuid

import pytest

from pipeline.kafka.local import KAFKA_VERSION, process, tooling


def test_the_maven_project_and_log_config_are_inside_the_package() -> None:
    assert tooling.POM.is_file()
    assert tooling.LOG_CONFIG.is_file()
    assert tooling.BROKER_FILES.parent.name == "kafka"


def test_the_pom_defaults_to_the_version_the_code_asks_for() -> None:
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", tooling.POM.read_text())
    assert found is not None
    assert found.group(1) == KAFKA_VERSION


def test_a_cluster_id_never_starts_with_a_dash_which_the_storage_tool_takes_for_a_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn = iter([b"\xfb" + bytes(15), bytes(16)])  # the first encodes to "-w...", refused
    monkeypatch.setattr(process.uuid, "uuid4", lambda: uuid.UUID(bytes=next(drawn)))
    cluster_id = process.random_cluster_id()
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAA"
    assert base64.urlsafe_b64decode(cluster_id + "==") == bytes(16)


def test_cluster_ids_are_22_characters_of_url_safe_base64() -> None:
    for _ in range(2000):
        cluster_id = process.random_cluster_id()
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", cluster_id)
