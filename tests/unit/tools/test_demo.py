"""The demo's parts that need no broker: its config, its summary, and its errors as one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import demo as demo_command
from pipeline.config import load_config
from pipeline.kafka.sending import ProduceStats
from pipeline.partners import FORMATS
from pipeline.tools.demo import DemoError, DemoOptions, demo_config
from pipeline.tools.demo_report import DemoOutputs, summarize
from tests.unit.cli.helpers import assert_one_line_error, run_cli


def test_demo_config_has_short_timeouts_every_partner_and_prefixed_topics(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_text(demo_config("127.0.0.1:9", "demo-x", tmp_path / "data"))
    config = load_config(path, env={})
    assert config.sessions.session_timeout_s == 5
    assert config.sessions.idle_timeout_s == 15
    assert config.worker.grace_s == 1
    assert config.worker.app_id == "demo-x"
    assert config.topics.input == "demo-x.events.raw"
    assert sorted(p.name for p in config.partners) == sorted(FORMATS)


def test_summary_counts_sessions_end_reasons_and_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_text(demo_config("127.0.0.1:9", "", tmp_path / "data"))
    config = load_config(path, env={})
    start = {"type": "session_start", "session_id": "s1"}
    end = {
        "type": "session_end",
        "session_id": "s1",
        "end_reason": "timeout",
        "end_ts": 0,
        "duration_ms": 4_000,
    }
    outputs = DemoOutputs(
        sessions=[start, end, {"type": "session_start", "session_id": "s2"}],
        enriched=[{"event_id": "e1"}],
        dead_letters=[{"reason": "malformed_json"}],
        partners={name: [] for name in FORMATS},
    )
    stats = ProduceStats("events.raw", delivered=3, events=4, started_ms=1, elapsed_s=2.0)
    text = summarize(outputs, stats, config, asked_rate=2, devices=1, output_dir=tmp_path)
    assert "at 127.0.0.1:9 and one worker" in text
    assert "(session timeout 5 s, idle timeout 15 s, grace 1 s)" in text
    assert "4 events in 3 messages from 1 devices: 2 events/s (asked 2)" in text
    assert "2 started, 1 ended" in text
    assert "timeout 1" in text
    assert "still open  1 (their end came after the demo)" in text
    assert "malformed_json 1" in text


def test_a_demo_that_cannot_finish_is_one_line_and_exit_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def fail(options: DemoOptions) -> str:
        raise DemoError("the worker exited with code 1; see worker.log")

    monkeypatch.setattr(demo_command, "run_demo", fail)
    code, out, err = run_cli(capsys, "demo", "--output-dir", str(tmp_path / "out"))
    assert code == 3
    assert out == ""
    assert_one_line_error(err, "sessionize demo: error: the worker exited with code 1")


def test_an_output_dir_that_cannot_be_made_is_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "demo", "--output-dir", str(blocker / "out"))
    assert code == 2
    assert_one_line_error(err, "cannot create output directory")


# Which broker: --bootstrap, then SESSIONIZE_BOOTSTRAP as for every command, then the old name


@pytest.mark.parametrize(
    ("flag", "env", "used", "warning"),
    [
        (None, {}, None, None),
        ("flag:1", {"SESSIONIZE_BOOTSTRAP": "env:1", "KAFKA_BOOTSTRAP": "old:1"}, "flag:1", None),
        (None, {"SESSIONIZE_BOOTSTRAP": "env:1"}, "env:1", None),
        (None, {"KAFKA_BOOTSTRAP": "old:1"}, "old:1", "deprecated: set SESSIONIZE_BOOTSTRAP"),
        (
            None,
            {"SESSIONIZE_BOOTSTRAP": "env:1", "KAFKA_BOOTSTRAP": "old:1"},
            "env:1",
            "deprecated and ignored",
        ),
    ],
)
def test_the_demo_reads_sessionize_bootstrap_and_warns_of_kafka_bootstrap(
    flag: str | None, env: dict[str, str], used: str | None, warning: str | None
) -> None:
    bootstrap, said = demo_command.demo_bootstrap(flag, env)
    assert bootstrap == used
    assert (said is None) == (warning is None)
    if warning is not None:
        assert said is not None and warning in said


@pytest.mark.parametrize(
    ("env", "warned"),
    [({"SESSIONIZE_BOOTSTRAP": "env:1"}, False), ({"KAFKA_BOOTSTRAP": "env:1"}, True)],
)
def test_the_demo_command_hands_the_environments_broker_to_the_demo(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    warned: bool,
) -> None:
    seen: list[DemoOptions] = []

    def record(options: DemoOptions) -> str:
        seen.append(options)
        return "summary"

    monkeypatch.delenv("SESSIONIZE_BOOTSTRAP", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(demo_command, "run_demo", record)
    code, out, err = run_cli(capsys, "demo", "--output-dir", str(tmp_path / "out"))
    assert (code, out) == (0, "summary\n")
    assert [options.bootstrap for options in seen] == ["env:1"]
    assert len(err) == int(warned)
    if warned:
        assert "sessionize demo: warning: KAFKA_BOOTSTRAP is deprecated" in err[0]
