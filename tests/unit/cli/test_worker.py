"""`sessionize worker`: start-up errors are one line, before Faust starts; --help says what the
README says of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.config import TopicSettings
from pipeline.config.settings import SECTIONS
from tests.unit.cli.helpers import run_cli


def test_worker_with_unreachable_broker_is_one_line_and_exit_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\nbootstrap = "127.0.0.1:1"\n')
    assert main(["worker", "--config", str(config)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "127.0.0.1:1" in err[0]


def test_worker_with_bad_config_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[worker]\ngrace = 2\n")
    assert main(["worker", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'grace'" in err[0]


def test_worker_help_says_what_it_reads_and_writes_and_every_worker_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "worker", "--help")
    assert code == 0
    text = " ".join(out.split())
    for flag in ("--config", "--bootstrap", "--loglevel", "SESSIONIZE_CONFIG"):
        assert flag in text
    topics = TopicSettings()
    for topic in (topics.input, topics.sessions, topics.enriched, topics.deadletter):
        assert topic in text
    for internal in ("<app_id>-events.by-device", "<app_id>-devices-changelog", "partner.<name>"):
        assert internal in text
    for key in SECTIONS["worker"]:
        assert key in text, key
    assert "instance_id" in text and "defaults to the host name" in text
    assert "<app_id>-<instance_id>" in text  # the transactional id it names
