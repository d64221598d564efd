"""What every Kafka command shares (`pipeline.cli.common`, `pipeline.kafka.connection`): bad
config is one line and exit 2 before any connection; brokers that are unreachable, silent or
refusing are one line and exit 3, saying why; no secret is ever shown."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka.protocol.admin import (
    ApiVersionResponse_v0,
    SaslAuthenticateResponse_v1,
    SaslHandShakeResponse_v1,
)

from tests.unit.cli.helpers import assert_one_line_error, run_cli, sessionize


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


@pytest.mark.parametrize(
    "command", [["produce", "--devices", "1"], ["consume"], ["topics", "list"]]
)
def test_bad_config_key(
    capsys: pytest.CaptureFixture[str], bad_config: Path, command: list[str]
) -> None:
    code, _, err = run_cli(capsys, *command, "--config", str(bad_config))
    assert code == 2
    assert_one_line_error(err, "unknown key 'app_idd'", "app_id")


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
