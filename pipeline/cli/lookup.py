"""`sessionize lookup`: a device's session, asked of a running worker's web endpoint.

Any worker answers: one that does not own the device's partition forwards the question to the
one that does (`pipeline.observe.web`).
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.cli.common import EXIT_KAFKA, CliError, Command, add_config_flag, config_from
from pipeline.config import Config

EXIT_NOT_FOUND = 1
TIMEOUT_S = 10.0


def _lookup_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", required=True, metavar="APP_ID", help="the device's app_id")
    parser.add_argument("--device", required=True, metavar="DEVICE_ID", help="its device_id")
    parser.add_argument(
        "--url",
        metavar="URL",
        help="a worker's web address (default: [worker] web_host and web_port of the config)",
    )
    parser.add_argument("--json", action="store_true", help="print the worker's JSON answer")
    add_config_flag(parser)


def worker_url(config: Config) -> str:
    """Where the config's worker listens."""
    settings = config.worker
    if settings.web_port == 0:
        raise CliError("[worker] web_port is 0 (any free port): give the worker's address --url")
    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::", "") else settings.web_host
    return f"http://{host}:{settings.web_port}"


def _lookup(args: argparse.Namespace) -> int:
    base = args.url or worker_url(config_from(args))
    path = "/sessions/{}/{}".format(
        *(urllib.parse.quote(v, safe="") for v in (args.app, args.device))
    )
    try:
        with urllib.request.urlopen(base.rstrip("/") + path, timeout=TIMEOUT_S) as reply:
            answer: dict[str, Any] = orjson.loads(reply.read())
    except urllib.error.HTTPError as exc:
        answer = _error_body(exc)
        if exc.code == 404:
            print(f"sessionize lookup: {answer.get('error', 'not found')}")
            return EXIT_NOT_FOUND
        raise CliError(
            f"the worker at {base} said: {answer.get('error', exc)}", EXIT_KAFKA
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"no worker answers at {base} ({reason})", EXIT_KAFKA) from None
    print(
        orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() if args.json else describe(answer)
    )
    return 0


def _error_body(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        body: dict[str, Any] = orjson.loads(exc.read())
    except (orjson.JSONDecodeError, OSError):
        return {}
    return body


def describe(answer: dict[str, Any]) -> str:
    """The worker's answer, as lines for a person."""
    lines = [
        f"device {answer['device_id']} of app {answer['app_id']}: partition {answer['partition']}, "
        f"{answer['sessions_so_far']} sessions so far (answered by {answer['answered_by']} "
        f"at {answer['url']})"
    ]
    session = answer.get("open_session")
    if session is not None:
        lines.append(
            f"open session {session['session_id']} (number {session['session_number']}): "
            f"started {_time(session['start_ts'])}, last event {_time(session['last_event_ts'])}, "
            f"{session['state']}, {session['event_count']} events, deadline "
            f"{_time(session['deadline_ts'])}"
        )
        if session.get("user_id") is not None:
            lines.append(f"  user {session['user_id']}")
        if session.get("attributes"):
            lines.append(f"  attributes {orjson.dumps(session['attributes']).decode()}")
    else:
        lines.append("no open session")
    closed = answer.get("last_closed_session")
    if closed is not None:
        lines.append(
            f"last closed session {closed['session_id']} (number {closed['session_number']}): "
            f"{_time(closed['start_ts'])} to {_time(closed['end_ts'])} "
            f"({closed['duration_ms'] / 1000:.1f} s)"
        )
    return "\n".join(lines)


def _time(ms: int | None) -> str:
    if ms is None:
        return "none"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


LOOKUP = Command(
    name="lookup",
    summary="print a device's session, asked of a running worker",
    description="Ask a running worker (any of them: the one that does not own the device's "
    "partition forwards the question) for the device's open session (id, number, start, last "
    "event, foreground or background, deadline, event count, attributes) or its last closed "
    "one. It is the worker's live state, which may be ahead of the committed outputs by up to "
    "[worker] commit_interval_s. Exits 1 when the worker knows no session of the device, 3 "
    "when no worker answers or it cannot answer now (a rebalance).",
    add_flags=_lookup_flags,
    run=_lookup,
)
