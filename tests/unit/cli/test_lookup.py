"""`sessionize lookup`: the worker's answer for a person, and one line when there is none."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import orjson
import pytest

from pipeline.cli.main import main

ANSWER = {
    "partition": 2,
    "answered_by": "worker-2",
    "url": "http://127.0.0.1:1",
    "app_id": "a1",
    "device_id": "d1",
    "sessions_so_far": 2,
    "open_session": {
        "session_id": "s2",
        "session_number": 2,
        "start_ts": 1_790_000_000_000,
        "last_event_ts": 1_790_000_005_000,
        "state": "background",
        "deadline_ts": 1_790_000_065_000,
        "event_count": 3,
        "user_id": "u1",
        "attributes": {"plan": "pro"},
    },
    "last_closed_session": {
        "session_id": "s1",
        "session_number": 1,
        "start_ts": 1_789_999_000_000,
        "end_ts": 1_789_999_030_000,
        "duration_ms": 30_000,
    },
}


@pytest.fixture
def worker_url() -> Iterator[str]:
    """A stand-in worker: d1 of a1 is known, any other device is not."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            known = self.path == "/sessions/a1/d1"
            body = ANSWER if known else {"error": "no session known for device 'x' of app 'a1'"}
            self.send_response(200 if known else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(orjson.dumps(body))

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_lookup_prints_the_open_and_the_last_closed_session(
    worker_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lookup", "--url", worker_url, "--app", "a1", "--device", "d1"]) == 0
    out = capsys.readouterr().out
    assert "answered by worker-2" in out
    assert "open session s2 (number 2)" in out and "background, 3 events" in out
    assert "deadline 2026-09-21 14:14:25.000 UTC" in out
    assert 'attributes {"plan":"pro"}' in out
    assert "last closed session s1 (number 1)" in out and "(30.0 s)" in out


def test_lookup_json_prints_the_workers_answer(
    worker_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lookup", "--url", worker_url, "--app", "a1", "--device", "d1", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == ANSWER


def test_an_unknown_device_is_one_line_and_exit_1(
    worker_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lookup", "--url", worker_url, "--app", "a1", "--device", "x"]) == 1
    assert capsys.readouterr().out.strip().endswith("no session known for device 'x' of app 'a1'")


def test_no_worker_answering_is_one_line_and_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["lookup", "--url", "http://127.0.0.1:9", "--app", "a1", "--device", "d1"])
    assert code == 3
    assert "no worker answers at http://127.0.0.1:9" in capsys.readouterr().err


def test_a_config_with_port_0_asks_for_the_address(
    tmp_path: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONIZE_WORKER_WEB_PORT", "0")
    assert main(["lookup", "--app", "a1", "--device", "d1"]) == 2
    assert "give the worker's address --url" in capsys.readouterr().err
