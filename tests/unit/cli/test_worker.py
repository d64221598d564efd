"""`sessionize worker`: start-up errors are one line, before Faust starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli.main import main


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
