"""Partners with their own session timeout (kit alignment), offline and in `align`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson

from pipeline.cli.main import main
from pipeline.config import load_config
from pipeline.offline import run_offline
from pipeline.tools.align import align, read_events, sweep

T0 = 1_790_000_000_000
CONFIG = """
[[partners]]
name = "canonical"
format = "canonical"

[[partners]]
name = "braze"
format = "braze"
session_timeout_s = 10
"""


def lines() -> bytes:
    """One device: launch, background, back 30 s later (inside 60 s, past Braze's 10 s), quit."""
    events = [
        ("app_launch", 0),
        ("app_background", 5_000),
        ("app_foreground", 35_000),
        ("app_terminate", 40_000),
    ]
    return b"".join(
        orjson.dumps(
            {"event_id": f"e{i}", "app_id": "a", "device_id": "d", "type": kind, "ts": T0 + offset}
        )
        + b"\n"
        for i, (kind, offset) in enumerate(events)
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_braze_10s_timeout_splits_a_session_the_60s_default_keeps_whole(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text(CONFIG)
    config = load_config(config_path, env={})
    run_offline(io.BytesIO(lines()), tmp_path, config, T0)

    canonical_starts = [
        r for r in records(tmp_path / "sessions.jsonl") if r["type"] == "session_start"
    ]
    braze = records(tmp_path / "partners" / "braze.jsonl")
    braze_starts = [r for r in braze if r["name"] == "Session Start"]
    braze_ends = [r for r in braze if r["name"] == "Session End"]
    assert len(canonical_starts) == 1
    assert len(braze_starts) == 2
    assert [e["properties"]["end_reason"] for e in braze_ends] == ["timeout", "terminate"]
    braze_sessions = {r["properties"]["session_id"] for r in braze}
    assert len(braze_sessions) == 2
    # The first Braze session is the pipeline's own first session, cut at the background event.
    assert canonical_starts[0]["session_id"] in braze_sessions
    # The events after the split carry Braze's second session.
    foreground = next(r for r in braze if r["name"] == "Application Foreground")
    assert foreground["properties"]["session_id"] != canonical_starts[0]["session_id"]


def test_align_reports_the_split(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text(CONFIG)
    config = load_config(config_path, env={})
    report = {
        row.partner: row for row in align(read_events(io.BytesIO(lines()), config, T0), config)
    }
    assert (report["canonical"].sessions, report["canonical"].agreement) == (1, 1.0)
    assert report["braze"].sessions == 2
    assert report["braze"].pipeline_sessions == 1
    assert report["braze"].agreement == 0.0  # every event's session has other boundaries


def test_sweep_finds_the_pipeline_timeout_matches_itself(tmp_path: Path) -> None:
    config = load_config(None, env={})
    rows = sweep(read_events(io.BytesIO(lines()), config, T0), config)
    by_timeout = {row.timeout_s: row for row in rows}
    assert by_timeout[60.0].agreement == 1.0
    assert by_timeout[10.0].agreement < 1.0


def test_align_command_prints_a_table(tmp_path: Path, capsys: Any) -> None:
    source = tmp_path / "events.jsonl"
    source.write_bytes(lines())
    config_path = tmp_path / "config.toml"
    config_path.write_text(CONFIG)
    assert main(["align", "--input", str(source), "--config", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert "braze" in out and "10 s" in out and "0.0%" in out
