"""The local broker's files ship with the package, and the Maven project names our version."""

from __future__ import annotations

import re

from pipeline.kafka.local import KAFKA_VERSION, tooling


def test_the_maven_project_and_log_config_are_inside_the_package() -> None:
    assert tooling.POM.is_file()
    assert tooling.LOG_CONFIG.is_file()
    assert tooling.BROKER_FILES.parent.name == "kafka"


def test_the_pom_defaults_to_the_version_the_code_asks_for() -> None:
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", tooling.POM.read_text())
    assert found is not None
    assert found.group(1) == KAFKA_VERSION
