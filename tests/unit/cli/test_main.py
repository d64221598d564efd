"""The Kafka commands' command line without a broker: help, usage errors, unreachable brokers,
and the live traffic plan of `produce --devices` (pure)."""

from __future__ import annotations

import io
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.protocol.admin import (
    ApiVersionResponse_v0,
    SaslAuthenticateResponse_v1,
    SaslHandShakeResponse_v1,
)

from pipeline.cli.kafka import LivePlan, TimeWarp, plan_live
from pipeline.cli.main import main
from pipeline.config import load_config
from pipeline.engine import SessionConfig
from pipeline.input.events import MIN_TS_MS
from pipeline.offline import run_offline
from pipeline.tools.timeline import render_timeline
from pipeline.workload.generator import WorkloadSpec, generate_messages


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    """(exit code, stdout, stderr lines) of `sessionize ARGV`."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse: --help and bad flags
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text("[worker]\napp_idd = 'typo'\n")
    return path


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """An address that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"127.0.0.1:{server.getsockname()[1]}"


# Help


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        (
            ["produce"],
            ["--input", "--devices", "--rate", "--duration", "--seed", "--batch-size", "--topic"],
        ),
        (
            ["consume"],
            [
                "--topic",
                "--partner",
                "--pretty",
                "--from-beginning",
                "--follow",
                "--max",
                "--group",
            ],
        ),
        (["topics"], ["create", "list", "describe"]),
        (["demo"], ["--output-dir", "--duration", "--devices", "--rate", "KAFKA_BOOTSTRAP"]),
    ],
)
def test_help_explains_the_command_and_its_flags(
    capsys: pytest.CaptureFixture[str], command: list[str], flags: list[str]
) -> None:
    code, out, _ = run_cli(capsys, *command, "--help")
    assert code == 0
    for flag in [*flags, "--bootstrap"]:
        assert flag in out
    if command != ["demo"]:
        assert "--config" in out


def test_top_level_help_lists_the_kafka_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for name in ("produce", "consume", "topics", "demo", "worker", "run"):
        assert name in out


# Errors that need no broker: exit 2, one line


def assert_one_line_error(err: list[str], *needles: str) -> None:
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0]


def test_unknown_partner_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "consume", "--partner", "segment", "--bootstrap", "x:1")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "unknown partner 'segment'", "amplitude", "braze", "mixpanel")


def test_missing_input_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    code, _, err = run_cli(capsys, "produce", "--input", str(missing), "--bootstrap", "x:1")
    assert code == 2
    assert_one_line_error(err, "input file not found", str(missing))


@pytest.mark.parametrize(
    "command", [["produce", "--devices", "1"], ["consume"], ["topics", "list"]]
)
def test_bad_config_key(
    capsys: pytest.CaptureFixture[str], bad_config: Path, command: list[str]
) -> None:
    code, _, err = run_cli(capsys, *command, "--config", str(bad_config))
    assert code == 2
    assert_one_line_error(err, "unknown key 'app_idd'", "app_id")


@pytest.mark.parametrize(
    "argv",
    [
        ["produce", "--devise", "3"],
        ["consume", "--max", "0"],
        ["consume", "--topic", "a", "--partner", "b"],
        ["produce", "--input", "x.jsonl", "--devices", "3"],
        ["produce", "--devices", "3", "--rate", "fast"],
        ["topics", "delete"],
        ["demo", "--duration", "-1"],
    ],
)
def test_bad_flags(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, "error")


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


# Unreachable brokers: exit 3, one line naming the address and the time waited


@pytest.mark.parametrize(
    "command",
    [
        ["consume", "--topic", "sessions"],
        ["topics", "describe"],
        ["topics", "create"],
        ["produce", "--devices", "2", "--duration", "1"],
    ],
)
def test_refused_connection(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    started = time.monotonic()
    code, out, err = run_cli(capsys, *command, "--bootstrap", "127.0.0.1:1", "--timeout", "5")
    assert code == 3
    assert out == ""
    assert_one_line_error(err, "cannot reach Kafka at 127.0.0.1:1", " s")
    assert time.monotonic() - started < 5


def test_refused_connection_for_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"device_id": "d"}\n')
    code, _, err = run_cli(capsys, "produce", "--input", str(source), "--bootstrap", "127.0.0.1:1")
    assert code == 3
    assert_one_line_error(err, "cannot reach Kafka at 127.0.0.1:1")


@pytest.mark.parametrize("command", [["consume"], ["topics", "list"]])
def test_silent_broker_gives_up_after_timeout(
    capsys: pytest.CaptureFixture[str], silent_broker: str, command: list[str]
) -> None:
    started = time.monotonic()
    code, _, err = run_cli(capsys, *command, "--bootstrap", silent_broker, "--timeout", "0.5")
    assert code == 3
    assert_one_line_error(err, f"cannot reach Kafka at {silent_broker}", "after 0.5 s")
    assert time.monotonic() - started < 5


def test_bootstrap_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONIZE_BOOTSTRAP", "127.0.0.1:1")
    code, _, err = run_cli(capsys, "topics", "list")
    assert code == 3
    assert_one_line_error(err, "127.0.0.1:1")


# Configuration that cannot work: exit 2, one line, before any connection, no secret shown

SECRET = "the-secret"
KAFKA_COMMANDS = [["worker"], ["topics", "list"], ["consume"], ["produce", "--devices", "1"]]
SASL = '[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
SASL += f'sasl_username = "sessionize"\nsasl_password = "{SECRET}"\n'


@pytest.mark.parametrize("command", KAFKA_COMMANDS)
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (f'[kafka]\nsasl_password = ["{SECRET}"]\n', "'sasl_password' must be str, got a list"),
        ('[kafka]\nsecurity_protocol = "BOGUS"\n', "'security_protocol' must be one of"),
        (
            '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "NOPE"\n',
            "'sasl_mechanism' must be one of",
        ),
        ('[kafka]\nsecurity_protocol = "SSL"\nssl_cafile = "/nope/ca.pem"\n', "ssl_cafile"),
        ('[kafka]\nsecurity_protocol = "SSL"\nssl_certfile = "/nope/c.pem"\n', "ssl_certfile"),
        ("[worker]\ngrace_s = -5\n", "'grace_s' must be at least 0"),
        ("[worker]\ntick_s = 0\n", "'tick_s' must be greater than 0"),
        ("[worker]\ncheckpoint_every = 0\n", "'checkpoint_every' must be at least 1"),
    ],
)
def test_config_that_cannot_work_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: list[str],
    text: str,
    needle: str,
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    code, out, err = run_cli(capsys, *command, "--config", str(config), "--bootstrap", "x:1")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, needle)
    assert SECRET not in err[0]


@pytest.mark.parametrize("command", KAFKA_COMMANDS)
def test_a_secret_in_a_wrongly_typed_variable_is_not_shown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("SESSIONIZE_TOPICS_PARTITIONS", SECRET)
    code, _, err = run_cli(capsys, *command, "--bootstrap", "x:1")
    assert code == 2
    assert_one_line_error(err, "SESSIONIZE_TOPICS_PARTITIONS must be int")
    assert SECRET not in err[0]


def sessionize(*argv: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of `python -m pipeline ARGV` in a process of its own: logging
    as a user gets it (under pytest, the log capture would hide aiokafka's own lines)."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    return done.returncode, done.stderr.splitlines()


@pytest.mark.parametrize("command", [["worker"], ["topics", "list"]])
def test_unreachable_kafka_is_one_line_not_aiokafkas_too(command: list[str]) -> None:
    code, err = sessionize(*command, "--bootstrap", "127.0.0.1:1")
    assert code == 3
    assert_one_line_error(err, "cannot reach Kafka at 127.0.0.1:1")


# A broker that answers and refuses: exit 3, one line saying what it refused


class _RefusingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _RefusingBroker)
        self.mode = mode


class _RefusingBroker(socketserver.BaseRequestHandler):
    """Answers ApiVersions and the SASL handshake as a broker does, refusing per `server.mode`:
    "mechanism" offers SCRAM-SHA-512 only, "credentials" fails the authentication, "listener"
    is a listener without SASL (ILLEGAL_SASL_STATE, as Kafka answers on PLAINTEXT)."""

    def handle(self) -> None:
        assert isinstance(self.server, _RefusingServer)
        mode = self.server.mode
        while len(head := self.request.recv(4, socket.MSG_WAITALL)) == 4:
            frame = self.request.recv(struct.unpack(">i", head)[0], socket.MSG_WAITALL)
            api_key, _, correlation = struct.unpack(">hhi", frame[:8])
            if api_key == 18:
                body = ApiVersionResponse_v0(error_code=0, api_versions=[(17, 0, 1), (36, 0, 1)])
            elif api_key == 17:
                offered = ["SCRAM-SHA-512"] if mode == "mechanism" else ["PLAIN"]
                error = 34 if mode == "listener" else 0
                body = SaslHandShakeResponse_v1(error_code=error, enabled_mechanisms=offered)
            elif api_key == 36:
                body = SaslAuthenticateResponse_v1(
                    error_code=58,
                    error_message="Authentication failed: Invalid username or password",
                    sasl_auth_bytes=b"",
                    session_lifetime_ms=0,
                )
            else:
                return
            response = struct.pack(">i", correlation) + body.encode()
            self.request.sendall(struct.pack(">i", len(response)) + response)


@pytest.fixture
def refusing_broker(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`refusing_broker(mode)`: a config file for SASL PLAIN against a broker refusing so."""
    servers: list[_RefusingServer] = []

    def start(mode: str) -> Path:
        server = _RefusingServer(mode)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        config = tmp_path / f"{mode}.toml"
        port = server.server_address[1]
        config.write_text(SASL + f'bootstrap = "127.0.0.1:{port}"\n')
        return config

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", KAFKA_COMMANDS)
@pytest.mark.parametrize(
    ("mode", "needles"),
    [
        ("mechanism", ["refused SASL mechanism PLAIN", "it accepts SCRAM-SHA-512"]),
        ("credentials", ["refused to authenticate user 'sessionize' with PLAIN"]),
        ("listener", ["does not take SASL on this listener", "SASL_PLAINTEXT"]),
    ],
)
def test_refused_sasl_is_said_as_such(
    capsys: pytest.CaptureFixture[str],
    refusing_broker: Callable[[str], Path],
    command: list[str],
    mode: str,
    needles: list[str],
) -> None:
    config = refusing_broker(mode)
    code, out, err = run_cli(capsys, *command, "--config", str(config))
    assert code == 3
    assert out == ""
    assert_one_line_error(err, *needles)
    assert "cannot reach" not in err[0]
    assert SECRET not in err[0]


def test_worker_refused_sasl_is_one_line(refusing_broker: Callable[[str], Path]) -> None:
    code, err = sessionize("worker", "--config", str(refusing_broker("credentials")))
    assert code == 3
    assert_one_line_error(err, "refused to authenticate user 'sessionize'")
    assert SECRET not in err[0]


# The live plan of `produce --devices`

DEMO_SESSIONS = SessionConfig(session_timeout_s=5, idle_timeout_s=15)


def events_of(plan: LivePlan, run_start_ms: int) -> list[tuple[int, dict[str, Any]]]:
    """(send ms, event) of every JSON event in the plan, stamped for `run_start_ms`."""
    found = []
    for message in plan.messages:
        try:
            parsed = orjson.loads(plan.stamp(message, run_start_ms))
        except orjson.JSONDecodeError:
            continue
        events = parsed.get("events", [parsed]) if isinstance(parsed, dict) else None
        if isinstance(events, list):
            found.extend((message.send_ms, event) for event in events if isinstance(event, dict))
    return found


def test_warp_keeps_the_timeout_boundary_to_the_ms() -> None:
    warp = TimeWarp.for_sessions(DEMO_SESSIONS)
    assert warp.gap(59_999) < 5_000 <= warp.gap(60_000)
    assert warp.gap(10 * 3_600_000) == 16_000  # long idles shrink to the idle timeout + 1 s
    assert warp.timeout_s(30) == 2.5
    assert TimeWarp.for_sessions(SessionConfig()).gap(59_999) == 59_999  # default: real time


def test_plan_sends_about_the_rate_over_the_duration() -> None:
    spec = WorkloadSpec(devices=400, seed=3)
    plan = plan_live(spec, TimeWarp.for_sessions(DEMO_SESSIONS), rate=100, duration_s=20)
    events = sum(m.events for m in plan.messages)
    assert 1_800 <= events <= 2_000
    per_5_s = Counter(m.send_ms // 5_000 for m in plan.messages for _ in range(m.events))
    assert all(400 <= count <= 600 for count in per_5_s.values()), per_5_s
    assert all(0 <= m.send_ms < 20_000 for m in plan.messages)
    assert [m.send_ms for m in plan.messages] == sorted(m.send_ms for m in plan.messages)


def test_event_time_is_send_time_and_retries_keep_theirs() -> None:
    spec = WorkloadSpec(devices=60, seed=1, duplicate_rate=0.1, bad_rate=0.0)
    plan = plan_live(spec, TimeWarp.for_sessions(DEMO_SESSIONS), rate=50, duration_s=30)
    run_start = 1_800_000_000_000
    first_ts: dict[str, int] = {}
    latest: dict[str, int] = {}
    retries = 0
    for send_ms, event in events_of(plan, run_start):
        ts, event_id = event["ts"], event["event_id"]
        if event_id in first_ts:  # an SDK retry: the same event, its first time
            assert ts == first_ts[event_id]
            retries += 1
            continue
        assert ts == run_start + send_ms
        assert ts >= latest.get(event["device_id"], 0)
        first_ts[event_id] = latest[event["device_id"]] = ts
    assert retries > 0


def test_bad_timestamps_stay_bad() -> None:
    spec = WorkloadSpec(devices=200, seed=5, bad_rate=0.2)
    plan = plan_live(spec, TimeWarp.for_sessions(DEMO_SESSIONS), rate=500, duration_s=30)
    stamped = events_of(plan, 1_800_000_000_000)
    assert any(isinstance(e.get("ts"), int) and e["ts"] < MIN_TS_MS for _, e in stamped)
    assert any(isinstance(e.get("ts"), str) for _, e in stamped)


def test_too_few_devices_start_at_once_and_report_their_rate() -> None:
    plan = plan_live(WorkloadSpec(devices=5), TimeWarp.for_sessions(DEMO_SESSIONS), 1_000, 10)
    assert plan.devices == 5
    assert plan.best_rate < 100
    launches = [m.send_ms for m in plan.messages if b"app_launch" in m.value]
    assert min(launches) < 1_000


def sessions_per_device(output_dir: Path) -> dict[str, list[tuple[int, str, int]]]:
    found: dict[str, list[tuple[int, str, int]]] = {}
    for line in (output_dir / "sessions.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        if record["type"] == "session_end":
            found.setdefault(record["device_id"], []).append(
                (record["session_number"], record["end_reason"], record["event_count"])
            )
    return found


def test_warped_traffic_gives_the_workloads_sessions(tmp_path: Path) -> None:
    """With idle timeout = 30 x session timeout (as the workload assumes), the warp is exact:
    every device gets the same sessions, end reasons and event counts as the workload itself."""
    spec = WorkloadSpec(devices=40, seed=11, duplicate_rate=0.05, bad_rate=0.02)
    original = tmp_path / "original"
    original.mkdir()
    source = io.BytesIO(b"".join(m + b"\n" for m in generate_messages(spec)))
    run_offline(source, original, load_config(None, env={}), now_ms=spec.start_ms + 10**10)

    fast = tmp_path / "fast.toml"
    fast.write_text("[sessions]\nsession_timeout_s = 2\nidle_timeout_s = 60\n")
    config = load_config(fast, env={})
    plan = plan_live(spec, TimeWarp.for_sessions(config.sessions), rate=10**6, duration_s=10**7)
    assert plan.devices == 40
    run_start = 1_800_000_000_000
    warped = tmp_path / "warped"
    warped.mkdir()
    source = io.BytesIO(b"".join(plan.stamp(m, run_start) + b"\n" for m in plan.messages))
    run_offline(source, warped, config, now_ms=run_start + 10**10)

    assert sessions_per_device(warped) == sessions_per_device(original)


def test_timeline_of_a_live_plan_is_a_self_contained_page(tmp_path: Path) -> None:
    spec = WorkloadSpec(devices=80, seed=2)
    config_path = tmp_path / "demo.toml"
    config_path.write_text("[sessions]\nsession_timeout_s = 5\nidle_timeout_s = 15\n")
    config = load_config(config_path, env={})
    plan = plan_live(spec, TimeWarp.for_sessions(config.sessions), rate=60, duration_s=30)
    source = io.BytesIO(b"".join(plan.stamp(m, 1_800_000_000_000) + b"\n" for m in plan.messages))
    run_offline(source, tmp_path, config, now_ms=1_800_000_000_000)
    records = [
        orjson.loads(line)
        for name in ("sessions.jsonl", "enriched.jsonl")
        for line in (tmp_path / name).read_bytes().splitlines()
    ]
    page = render_timeline(records, devices=6, title="t")
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "<script" not in page
    assert page.count("dev-") >= 6
    assert "timeout" in page
