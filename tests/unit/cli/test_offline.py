"""The commands that need no Kafka: generate (happy path, errors) and its output run offline."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.cli.main import main
from pipeline.workload.generator import WorkloadSpec, generate_messages
from tests.unit.cli.helpers import assert_one_line_error, run_cli


def test_generate_writes_the_seeded_workload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "events.jsonl"
    argv = ["generate", "--devices", "20", "--seed", "4", "--batch-size", "5", "-o", str(target)]
    assert main(argv) == 0
    lines = target.read_bytes().splitlines()
    expected = list(generate_messages(WorkloadSpec(devices=20, seed=4, batch_size=5)))
    assert lines == expected
    assert f"wrote {len(lines)} messages" in capsys.readouterr().err
    assert any(b'"events"' in line for line in lines)


def test_generate_output_runs_offline(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    assert main(["generate", "--devices", "10", "-o", str(source)]) == 0
    assert main(["run", "--input", str(source), "--output-dir", str(tmp_path / "out")]) == 0
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["sessions_started"] > 0
    assert summary["lines"] == len(source.read_bytes().splitlines())


@pytest.mark.parametrize("flag", ["--devices", "--batch-size", "--events-per-device"])
def test_generate_refuses_non_positive_sizes(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "generate", flag, "0")
    assert code == 2
    assert_one_line_error(err, flag, "at least 1")


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--duplicate-rate", "2", "from 0 to 1"),
        ("--duplicate-rate", "-0.1", "from 0 to 1"),
        ("--duplicate-rate", "nan", "from 0 to 1"),
        ("--bad-rate", "1.5", "from 0 to 1"),
        ("--bad-rate", "x", "not a number"),
        ("--devices", "-3", "at least 1"),
        ("--apps", "0", "at least 1"),
        ("--events-per-device", "2.5", "not a whole number"),
        ("--batch-size", "x", "not a whole number"),
        ("--seed", "1.5", "invalid int value"),
        ("--start-ms", "5", "2000-01-01"),
        ("--start-ms", "soon", "not a whole number"),
    ],
)
def test_generate_refuses_bad_numbers_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, needle: str
) -> None:
    target = tmp_path / "events.jsonl"
    code, _, err = run_cli(capsys, "generate", flag, value, "-o", str(target))
    assert code == 2
    assert_one_line_error(err, flag, needle)
    assert not target.exists()


@pytest.mark.parametrize("jobs", ["0", "-1", "x", "1.5"])
def test_run_refuses_bad_jobs_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"")
    output_dir = tmp_path / "out"
    argv = ["run", "--input", str(source), "--output-dir", str(output_dir), "--jobs", jobs]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, "--jobs")
    assert not output_dir.exists()


@pytest.mark.parametrize("jobs", [[], ["--jobs", "1"], ["--jobs", "2"]])
def test_missing_input_makes_no_output_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: list[str]
) -> None:
    output_dir = tmp_path / "out" / "nested"
    missing = tmp_path / "missing.jsonl"
    argv = ["run", "--input", str(missing), "--output-dir", str(output_dir), *jobs]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, "input file not found", str(missing))
    assert not (tmp_path / "out").exists()
