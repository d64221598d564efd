"""The commands that need no Kafka: generate (happy path, errors) and its output run offline."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.cli.main import main
from pipeline.workload.generator import WorkloadSpec, generate_messages


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
    assert main(["generate", flag, "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least 1" in err[0]
