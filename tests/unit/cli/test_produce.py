"""`sessionize produce` without a broker: what to send, and the input file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.cli.helpers import assert_one_line_error, run_cli


def test_missing_input_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    code, _, err = run_cli(capsys, "produce", "--input", str(missing), "--bootstrap", "x:1")
    assert code == 2
    assert_one_line_error(err, "input file not found", str(missing))


def test_produce_needs_something_to_send(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "produce", "--bootstrap", "x:1")
    assert code == 2
    assert_one_line_error(err, "--input", "--devices")


def test_generator_flags_do_not_go_with_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("{}\n")
    code, _, err = run_cli(capsys, "produce", "--input", str(source), "--rate", "5")
    assert code == 2
    assert_one_line_error(err, "--rate", "--devices")


def test_refused_connection_for_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"device_id": "d"}\n')
    code, _, err = run_cli(capsys, "produce", "--input", str(source), "--bootstrap", "127.0.0.1:1")
    assert code == 3
    assert_one_line_error(err, "cannot reach Kafka at 127.0.0.1:1")
