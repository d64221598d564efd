"""SPEC section 5: offline mode end to end, through `run_offline` and the `run` command.

Every run here goes through `check_output_dir`, so every record written in these tests is
also checked against its schema in `schemas/` with the reference `jsonschema` library.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cli.main import main
from pipeline.config import Config, load_config
from pipeline.input import Limits
from pipeline.offline import run_offline
from pipeline.partners import Partner
from tests.schema_check import check_output_dir, partner_formats

NOW = 1_790_000_000_000  # processing time of every run (--now-ms)
T0 = NOW - 3_600_000  # event times start an hour earlier
REPO = Path(__file__).resolve().parents[2]
DEFAULT_PARTNER_FILES = {"amplitude", "braze", "canonical", "ga4", "mixpanel"}

Record = dict[str, Any]


# --- factories -------------------------------------------------------------------------------


def event(
    event_id: str,
    ts: int,
    kind: str = "screen_view",
    *,
    app_id: str = "app-a",
    device_id: str = "dev-1",
    **fields: Any,
) -> Record:
    """A valid input event; `ts` is relative to T0."""
    return {
        "event_id": event_id,
        "app_id": app_id,
        "device_id": device_id,
        "type": kind,
        "ts": T0 + ts,
        **fields,
    }


def batch(
    *events: Record, app_id: str = "app-a", device_id: str = "dev-1", **fields: Any
) -> Record:
    """A batch message; its events inherit app_id/device_id unless they set them."""
    return {"app_id": app_id, "device_id": device_id, **fields, "events": list(events)}


def increment(event_id: str, ts: int, key: str, value: Any, **fields: Any) -> Record:
    attribute = {"op": "increment", "key": key, "value": value}
    return event(event_id, ts, "session_attribute", attribute=attribute, **fields)


def set_attribute(event_id: str, ts: int, key: str, value: Any, **fields: Any) -> Record:
    attribute = {"op": "set", "key": key, "value": value}
    return event(event_id, ts, "session_attribute", attribute=attribute, **fields)


def jsonl(*messages: Record | bytes) -> bytes:
    """Input file contents: records are serialized, bytes are written as they are."""
    lines = [m if isinstance(m, bytes) else orjson.dumps(m) for m in messages]
    return b"".join(line + b"\n" for line in lines)


def default_config() -> Config:
    """Defaults only: the environment of the machine running the tests plays no part."""
    return load_config(None, env={})


def run(data: bytes, output_dir: Path, config: Config | None = None) -> dict[str, Any]:
    """Run offline mode in-process and return every output, checked against its schema."""
    config = config or default_config()
    summary = run_offline(io.BytesIO(data), output_dir, config, NOW)
    outputs = check_output_dir(output_dir, partner_formats(config.partners))
    assert outputs["summary"] == orjson.loads(summary.to_json())
    return outputs


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(autouse=True)
def _no_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("SESSIONIZE_")]:
        monkeypatch.delenv(name)
    yield


def cli(*argv: str) -> int:
    """`sessionize ARGV` in-process; argparse errors exit through SystemExit."""
    try:
        return main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


def run_cli(tmp_path: Path, data: bytes, *extra: str) -> tuple[int, dict[str, Any] | None]:
    """Write `data` to a file, run `sessionize run` on it, return (exit code, outputs)."""
    source = tmp_path / "events.jsonl"
    source.write_bytes(data)
    output_dir = tmp_path / "out"
    argv = ["run", "--input", str(source), "--output-dir", str(output_dir)]
    code = cli(*argv, "--now-ms", str(NOW), *extra)
    if code != 0:
        return code, None
    config_path = extra[extra.index("--config") + 1] if "--config" in extra else None
    partners = load_config(config_path, env={}).partners
    return code, check_output_dir(output_dir, partner_formats(partners))


def by_device(records: list[Record], app_id: str, device_id: str) -> list[Record]:
    return [r for r in records if r["app_id"] == app_id and r["device_id"] == device_id]


def ends(outputs: dict[str, Any]) -> list[Record]:
    return [r for r in outputs["sessions"] if r["type"] == "session_end"]


# --- output files ----------------------------------------------------------------------------


def test_writes_every_output_file(tmp_path: Path) -> None:
    data = jsonl(event("e1", 0, "app_launch"), event("e2", 1_000), b"{not json")
    outputs = run(data, tmp_path)
    for name in ("sessions.jsonl", "enriched.jsonl", "dead_letter.jsonl", "summary.json"):
        assert (tmp_path / name).is_file()
    assert {p.stem for p in (tmp_path / "partners").glob("*.jsonl")} == DEFAULT_PARTNER_FILES
    assert [r["type"] for r in outputs["sessions"]] == ["session_start", "session_end"]
    assert [r["event_id"] for r in outputs["enriched"]] == ["e1", "e2"]
    assert [r["reason"] for r in outputs["dead_letter"]] == ["malformed_json"]
    summary = outputs["summary"]
    assert (summary["lines"], summary["events_applied"], summary["duplicates"]) == (3, 2, 0)
    assert summary["dead_letters"] == {"malformed_json": 1}
    for name in DEFAULT_PARTNER_FILES:
        assert outputs["partners"][name], f"partner {name} got no records"


def test_output_files_exist_even_when_input_is_empty(tmp_path: Path) -> None:
    outputs = run(b"", tmp_path)
    assert outputs["sessions"] == outputs["enriched"] == outputs["dead_letter"] == []
    assert outputs["summary"]["lines"] == 0


def test_partner_file_is_named_after_the_partner(tmp_path: Path) -> None:
    warehouse = Partner(name="warehouse", format="canonical", topic="partner.warehouse")
    config = Config(partners=(warehouse,))
    outputs = run(jsonl(event("e1", 0, "app_launch")), tmp_path, config)
    assert [p.name for p in (tmp_path / "partners").iterdir()] == ["warehouse.jsonl"]
    canonical = outputs["partners"]["warehouse"]
    assert canonical == [outputs["sessions"][0], outputs["enriched"][0], outputs["sessions"][1]]


def test_last_line_without_newline_is_read(tmp_path: Path) -> None:
    data = jsonl(event("e1", 0, "app_launch")) + orjson.dumps(event("e2", 5_000))
    outputs = run(data, tmp_path)
    assert [r["event_id"] for r in outputs["enriched"]] == ["e1", "e2"]
    assert outputs["summary"]["lines"] == 2


def test_lines_across_read_blocks_are_whole_and_numbered(tmp_path: Path) -> None:
    # Input is read in 1 MiB blocks: lines straddling a block boundary must come out whole.
    events = [event("e0", 0, "app_launch")] + [
        event(f"e{n}", n, name="x" * (n % 300)) for n in range(1, 12_000)
    ]
    bad_line = 9_000
    lines = [orjson.dumps(e) for e in events]
    lines[bad_line - 1] = b"{not json"
    data = b"\n".join(lines) + b"\n"
    assert len(data) > 2 * 2**20
    outputs = run(data, tmp_path)
    assert outputs["summary"]["lines"] == len(events)
    assert len(outputs["enriched"]) == len(events) - 1
    [dead] = outputs["dead_letter"]
    assert (dead["line"], dead["payload"]) == (bad_line, "{not json")


def test_crlf_line_endings_are_accepted(tmp_path: Path) -> None:
    data = orjson.dumps(event("e1", 0, "app_launch")) + b"\r\n"
    outputs = run(data + orjson.dumps(event("e2", 5_000)) + b"\r\n", tmp_path)
    assert [r["event_id"] for r in outputs["enriched"]] == ["e1", "e2"]


# --- dead letters ----------------------------------------------------------------------------


def test_dead_letter_has_line_number_and_original_text(tmp_path: Path) -> None:
    bad = b'{"event_id": "e2",  "app_id": "app-a", "type": "screen_view"}'  # no device_id, ts
    outputs = run(jsonl(event("e1", 0, "app_launch"), bad, b"[1, 2]"), tmp_path)
    first, second = outputs["dead_letter"]
    assert (first["reason"], first["line"], first["index"]) == ("invalid_event", 2, None)
    assert first["payload"] == bad.decode()  # as sent, spacing included: not re-serialized
    assert first["payload_encoding"] == "utf-8"
    assert (second["reason"], second["line"], second["payload"]) == ("malformed_json", 3, "[1, 2]")
    assert "line" in first and "topic" not in first


def test_non_utf8_line_is_kept_as_base64(tmp_path: Path) -> None:
    garbage = b"\xff\xfe\x00binary\x80"
    outputs = run(jsonl(garbage), tmp_path)
    [dead] = outputs["dead_letter"]
    assert (dead["reason"], dead["line"], dead["payload_encoding"]) == (
        "malformed_json",
        1,
        "base64",
    )
    assert base64.b64decode(dead["payload"]) == garbage


def test_blank_line_in_the_middle_is_a_malformed_json_dead_letter(tmp_path: Path) -> None:
    data = jsonl(event("e1", 0, "app_launch"), b"", event("e2", 1_000))
    outputs = run(data, tmp_path)
    [dead] = outputs["dead_letter"]
    assert (dead["reason"], dead["line"], dead["payload"]) == ("malformed_json", 2, "")
    assert [r["event_id"] for r in outputs["enriched"]] == ["e1", "e2"]
    assert outputs["summary"]["lines"] == 3


def test_bad_event_in_batch_is_dead_lettered_alone_with_its_index(tmp_path: Path) -> None:
    bad = {"event_id": "e2", "type": "screen_view", "ts": "yesterday"}
    message = batch(
        {"event_id": "e1", "type": "app_launch", "ts": T0},
        bad,
        {"event_id": "e3", "type": "screen_view", "ts": T0 + 1_000},
    )
    outputs = run(jsonl(event("e0", -500_000, "app_launch"), message), tmp_path)
    [dead] = outputs["dead_letter"]
    assert (dead["reason"], dead["line"], dead["index"]) == ("invalid_event", 2, 1)
    assert orjson.loads(dead["payload"]) == bad  # the event as sent, not the whole batch
    assert [r["event_id"] for r in outputs["enriched"]] == ["e0", "e1", "e3"]
    assert outputs["enriched"][1]["device_id"] == "dev-1"  # inherited from the batch


def test_batch_that_is_not_a_batch_is_rejected_whole(tmp_path: Path) -> None:
    not_array = b'{"app_id": "app-a", "device_id": "dev-1", "events": {"event_id": "e1"}}'
    outputs = run(jsonl(not_array), tmp_path)
    [dead] = outputs["dead_letter"]
    assert (dead["reason"], dead["line"], dead["index"]) == ("invalid_event", 1, None)
    assert dead["payload"] == not_array.decode()


def test_empty_batch_applies_nothing_and_counts_as_a_line(tmp_path: Path) -> None:
    outputs = run(jsonl(batch(), event("e1", 0, "app_launch")), tmp_path)
    assert outputs["dead_letter"] == []
    assert [r["event_id"] for r in outputs["enriched"]] == ["e1"]
    assert (outputs["summary"]["lines"], outputs["summary"]["events_applied"]) == (2, 1)


def _too_large() -> bytes:
    padding = "x" * Limits().max_event_bytes
    return orjson.dumps(event("big", 0, "custom_event", attributes={"padding": padding}))


def _deep(depth: int) -> bytes:
    """A custom event `depth` levels deep (the event is level 1), written as text."""
    head = orjson.dumps(event("deep", 0, "custom_event"))[:-1] + b',"attributes":'
    return head + b'{"x":' * (depth - 2) + b"{}" + b"}" * (depth - 2) + b"}"


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("malformed_json", b'{"event_id": "e9", "app_id": '),
        ("malformed_json", b'"just a string"'),
        ("invalid_event", orjson.dumps(event("e9", 0, "app_crash"))),
        ("invalid_event", orjson.dumps(increment("e9", 0, "level", "one"))),
        ("timestamp_out_of_range", orjson.dumps({**event("e9", 0), "ts": 946_684_799_999})),
        ("timestamp_out_of_range", orjson.dumps({**event("e9", 0), "ts": NOW + 86_400_001})),
        ("too_large", _too_large()),
        ("invalid_event", _deep(33)),
        ("invalid_event", _deep(1000)),
    ],
    ids=[
        "truncated",
        "not-object",
        "unknown-type",
        "bad-attribute",
        "before-2000",
        "future",
        "too-large",
        "deeper-than-max-depth",
        "deeper-than-json-writers",
    ],
)
def test_rejected_message_reaches_dead_letter_and_has_no_effect(
    tmp_path: Path, reason: str, message: bytes
) -> None:
    data = jsonl(event("e1", 0, "app_launch"), event("e2", 1_000, "app_background"), message)
    data += jsonl(event("e3", 59_999, "app_foreground"))
    outputs = run(data, tmp_path)
    [dead] = outputs["dead_letter"]
    assert (dead["reason"], dead["line"], dead["index"]) == (reason, 3, None)
    cap = Limits().max_dead_letter_payload_bytes
    assert dead["payload"] == message[:cap].decode()
    assert dead.get("payload_bytes") == (len(message) if len(message) > cap else None)
    # One session: the rejected message neither expired, extended nor opened one.
    [end] = ends(outputs)
    assert (end["event_count"], end["end_ts"]) == (3, T0 + 59_999)
    assert outputs["summary"]["dead_letters"] == {reason: 1}


def test_attribute_not_numeric_reaches_dead_letter(tmp_path: Path) -> None:
    rejected = increment("e3", 2_000, "plan", 1)
    data = jsonl(event("e1", 0, "app_launch"), set_attribute("e2", 1_000, "plan", "pro"), rejected)
    outputs = run(data, tmp_path)
    [dead] = outputs["dead_letter"]
    assert (dead["reason"], dead["line"], dead["index"]) == ("attribute_not_numeric", 3, None)
    assert orjson.loads(dead["payload"]) == rejected
    [end] = ends(outputs)
    assert (end["attributes"], end["event_count"], end["end_ts"]) == (
        {"plan": "pro"},
        2,
        T0 + 1_000,
    )


def _not_numeric_batch() -> tuple[Record, Record]:
    rejected = {
        "event_id": "e3",
        "type": "session_attribute",
        "ts": T0 + 2_000,
        "attribute": {"op": "increment", "key": "plan", "value": 1},
    }
    message = batch(
        {"event_id": "e1", "type": "app_launch", "ts": T0},
        {
            "event_id": "e2",
            "type": "session_attribute",
            "ts": T0 + 1_000,
            "attribute": {"op": "set", "key": "plan", "value": "pro"},
        },
        rejected,
        {"event_id": "e4", "type": "screen_view", "ts": T0 + 3_000},
        user_id="u-1",
    )
    return message, rejected


def test_attribute_not_numeric_inside_batch_has_its_index(tmp_path: Path) -> None:
    message, _ = _not_numeric_batch()
    outputs = run(jsonl(b"{}", message), tmp_path)
    not_numeric = [r for r in outputs["dead_letter"] if r["reason"] == "attribute_not_numeric"]
    [dead] = not_numeric
    assert (dead["line"], dead["index"]) == (2, 2)
    assert orjson.loads(dead["payload"])["event_id"] == "e3"  # the event, not the whole batch
    assert [r["event_id"] for r in outputs["enriched"]] == ["e1", "e2", "e4"]
    assert [r["session_seq"] for r in outputs["enriched"]] == [1, 2, 3]


def test_attribute_not_numeric_inside_batch_keeps_the_event_as_sent(tmp_path: Path) -> None:
    # Like every other per-event dead letter of a batch (see the invalid_event test above), the
    # payload is the event's own bytes, without the fields it inherited from the batch.
    message, rejected = _not_numeric_batch()
    outputs = run(jsonl(message), tmp_path)
    [dead] = outputs["dead_letter"]
    assert orjson.loads(dead["payload"]) == rejected


@pytest.mark.parametrize("start", [2**64 - 1, -(2**63)], ids=["u64-max", "i64-min"])
def test_increment_past_the_64_bit_range_does_not_stop_the_run(tmp_path: Path, start: int) -> None:
    # orjson reads these integers, the increment leaves the range orjson can write.
    step = 1 if start > 0 else -1
    data = jsonl(
        set_attribute("e1", 0, "coins", start),
        increment("e2", 1_000, "coins", step),
        event("e3", 2_000, "app_terminate"),
    )
    outputs = run(data, tmp_path)
    summary = outputs["summary"]
    assert summary["lines"] == 3
    assert summary["events_applied"] + sum(summary["dead_letters"].values()) == 3


def test_increment_overflowing_to_infinity_is_not_silently_written_as_null(
    tmp_path: Path,
) -> None:
    data = jsonl(
        increment("e1", 0, "score", 1e308),
        increment("e2", 1_000, "score", 1e308),
        event("e3", 2_000, "app_terminate"),
    )
    outputs = run(data, tmp_path)
    [end] = ends(outputs)
    rejected = [d["line"] for d in outputs["dead_letter"]]
    # Either the overflowing increment is a dead letter, or the session holds a real number.
    assert rejected == [2] or isinstance(end["attributes"]["score"], float), end["attributes"]


# --- sessions end to end ---------------------------------------------------------------------


def test_two_apps_on_one_device_are_independent_sessions(tmp_path: Path) -> None:
    data = jsonl(
        event("a1", 0, "app_launch", app_id="app-a"),
        event("b1", 1_000, "app_launch", app_id="app-b"),
        event("a2", 2_000, "app_background", app_id="app-a"),
        # app-b's launch and activity neither force-quit nor extend app-a's session.
        event("b2", 30_000, app_id="app-b"),
        event("b3", 61_000, "app_background", app_id="app-b"),
        event("a3", 61_999, "app_foreground", app_id="app-a"),  # within app-a's timeout
        event("a1", 62_000, app_id="app-b"),  # an event_id of app-a is no duplicate in app-b
        event("a4", 62_500, "app_background", app_id="app-a"),
        event("a5", 122_500, "app_foreground", app_id="app-a"),  # exactly app-a's timeout
    )
    outputs = run(data, tmp_path)
    assert outputs["summary"]["duplicates"] == 0
    app_a = by_device(outputs["sessions"], "app-a", "dev-1")
    app_b = by_device(outputs["sessions"], "app-b", "dev-1")
    assert [(r["type"], r["session_number"]) for r in app_a] == [
        ("session_start", 1),
        ("session_end", 1),
        ("session_start", 2),
        ("session_end", 2),
    ]
    assert [(r["type"], r["session_number"]) for r in app_b] == [
        ("session_start", 1),
        ("session_end", 1),
    ]
    assert app_a[1]["event_count"] == 4 and app_a[1]["end_reason"] == "timeout"
    assert app_b[1]["event_count"] == 4 and app_b[1]["start_ts"] == T0 + 1_000
    ids = {r["session_id"] for r in outputs["sessions"]}
    assert len(ids) == 3


def test_duplicate_is_counted_and_not_emitted(tmp_path: Path) -> None:
    data = jsonl(event("e1", 0, "app_launch"), event("e2", 1_000), event("e2", 1_000))
    outputs = run(data, tmp_path)
    assert [r["event_id"] for r in outputs["enriched"]] == ["e1", "e2"]
    assert outputs["summary"]["duplicates"] == 1
    assert outputs["dead_letter"] == []


PER_APP_CONFIG = """\
[sessions]
session_timeout_s = 120

[sessions.apps."app-x"]
session_timeout_s = 10
"""


def test_per_app_timeout_from_config_file(tmp_path: Path) -> None:
    def resume_after(app_id: str, device_id: str, gap: int) -> list[Record]:
        who = {"app_id": app_id, "device_id": device_id}
        return [
            event(f"{device_id}-1", 0, "app_launch", **who),
            event(f"{device_id}-2", 1_000, "app_background", **who),
            event(f"{device_id}-3", 1_000 + gap, "app_foreground", **who),
        ]

    data = jsonl(
        *resume_after("app-x", "x-within", 9_999),
        *resume_after("app-x", "x-past", 10_000),
        *resume_after("app-y", "y-within", 119_999),
        *resume_after("app-y", "y-past", 120_000),
    )
    config = write_config(tmp_path, PER_APP_CONFIG)
    code, outputs = run_cli(tmp_path, data, "--config", str(config))
    assert code == 0 and outputs is not None
    sessions_per_device = {
        device: len([e for e in ends(outputs) if e["device_id"] == device])
        for device in ("x-within", "x-past", "y-within", "y-past")
    }
    assert sessions_per_device == {"x-within": 1, "x-past": 2, "y-within": 1, "y-past": 2}


def test_end_of_input_closes_open_sessions(tmp_path: Path) -> None:
    data = jsonl(
        event("b1", 0, "app_launch", device_id="backgrounded"),
        event("b2", 5_000, "app_background", device_id="backgrounded"),
        event("f1", 0, "app_launch", device_id="foreground"),
        event("f2", 7_000, device_id="foreground"),
        event("t1", 0, "app_launch", device_id="terminated"),
        event("t2", 3_000, "app_terminate", device_id="terminated"),
    )
    outputs = run(data, tmp_path)
    closed = {e["device_id"]: (e["end_reason"], e["end_ts"]) for e in ends(outputs)}
    assert closed == {
        "backgrounded": ("timeout", T0 + 5_000),
        "foreground": ("idle", T0 + 7_000),
        "terminated": ("terminate", T0 + 3_000),
    }
    assert outputs["summary"]["sessions_ended"] == {"timeout": 1, "idle": 1, "terminate": 1}


def test_same_input_gives_same_session_ids(tmp_path: Path) -> None:
    data = jsonl(event("e1", 0, "app_launch"), event("e2", 1_000, "app_terminate"))
    first = run(data, tmp_path / "first")
    second = run(data, tmp_path / "second")
    assert first["sessions"] == second["sessions"]
    for name in ("sessions.jsonl", "enriched.jsonl", "summary.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


# --- the command line ------------------------------------------------------------------------


def test_run_command_writes_outputs_and_exits_0(tmp_path: Path, capsys: Any) -> None:
    data = jsonl(event("e1", 0, "app_launch"), b"garbage", event("e2", 1_000))
    code, outputs = run_cli(tmp_path, data)
    assert code == 0 and outputs is not None
    assert outputs["summary"]["lines"] == 3
    assert len(outputs["dead_letter"]) == 1
    assert capsys.readouterr().err.count("\n") == 1  # the summary line


def test_run_command_reads_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    data = jsonl(event("e1", 0, "app_launch"), event("e2", 1_000, "app_terminate"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    output_dir = tmp_path / "out"
    assert cli("run", "--input", "-", "--output-dir", str(output_dir), "--now-ms", str(NOW)) == 0
    outputs = check_output_dir(output_dir, partner_formats(default_config().partners))
    assert [r["event_id"] for r in outputs["enriched"]] == ["e1", "e2"]
    assert "2 lines" in capsys.readouterr().err


def test_python_dash_m_pipeline_run_reads_stdin(tmp_path: Path) -> None:
    data = jsonl(event("e1", 0, "app_launch"), b"\xff", event("e2", 1_000, "app_background"))
    output_dir = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONIZE_")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--input", "-", "--output-dir", str(output_dir)],
        input=data,
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    assert len(result.stderr.decode().splitlines()) == 1
    outputs = check_output_dir(output_dir, partner_formats(default_config().partners))
    assert [r["event_id"] for r in outputs["enriched"]] == ["e1", "e2"]
    [dead] = outputs["dead_letter"]
    assert (dead["line"], dead["payload_encoding"]) == (2, "base64")
    assert ends(outputs)[0]["end_reason"] == "timeout"


UNKNOWN_FORMAT = """\
[[partners]]
name = "lake"
format = "parquet"
"""

SHARED_TOPIC = """\
[[partners]]
name = "one"
format = "canonical"
topic = "partner.shared"

[[partners]]
name = "two"
format = "amplitude"
topic = "partner.shared"
"""


@pytest.mark.parametrize(
    ("config_text", "argv_extra", "expected"),
    [
        (None, ["--input", "{tmp}/missing.jsonl"], "input file not found"),
        (None, ["--input", "{tmp}"], "is a directory"),
        (None, ["--config", "{tmp}/missing.toml"], "config file not found"),
        (None, ["--config", "{tmp}"], "cannot read config file"),  # a directory: unreadable
        ("[sessions\nsession_timeout_s = ", [], "not valid TOML"),
        ("[sessions]\nsession_timout_s = 30\n", [], "unknown key 'session_timout_s'"),
        ("[session]\nsession_timeout_s = 30\n", [], "unknown config section 'session'"),
        ('[sessions.apps."app-x"]\nsession_timeout_s = 0\n', [], "between 1 and 86400"),
        (UNKNOWN_FORMAT, [], "unknown format 'parquet'"),
        (SHARED_TOPIC, [], "both write topic 'partner.shared'"),
        (None, ["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (None, ["--now-ms", "soon"], "invalid int value"),
    ],
    ids=[
        "missing-input",
        "input-is-directory",
        "missing-config",
        "unreadable-config",
        "invalid-toml",
        "unknown-key",
        "unknown-section",
        "bad-app-timeout",
        "unknown-partner-format",
        "two-partners-one-topic",
        "bad-flag",
        "bad-now-ms",
    ],
)
def test_unusable_input_or_config_exits_2_with_one_line(
    tmp_path: Path,
    capsys: Any,
    config_text: str | None,
    argv_extra: list[str],
    expected: str,
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_bytes(jsonl(event("e1", 0, "app_launch")))
    argv = ["run", "--input", str(source), "--output-dir", str(tmp_path / "out")]
    if config_text is not None:
        argv += ["--config", str(write_config(tmp_path, config_text))]
    argv += [arg.format(tmp=tmp_path) for arg in argv_extra]  # later flags win
    assert cli(*argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert expected in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out" / "sessions.jsonl").exists()


def test_partner_name_that_is_not_a_file_name_is_a_config_error(
    tmp_path: Path, capsys: Any
) -> None:
    # A partner's name becomes partners/<name>.jsonl: a '/' in it must be refused up front.
    config = write_config(tmp_path, '[[partners]]\nname = "team/a"\nformat = "canonical"\n')
    code, _ = run_cli(tmp_path, jsonl(event("e1", 0, "app_launch")), "--config", str(config))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == 2
    assert len(err.splitlines()) == 1


def test_output_dir_that_is_a_file_exits_2(tmp_path: Path, capsys: Any) -> None:
    source = tmp_path / "events.jsonl"
    source.write_bytes(jsonl(event("e1", 0, "app_launch")))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert cli("run", "--input", str(source), "--output-dir", str(blocker)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "cannot create output directory" in err


def test_a_line_deeper_than_json_writers_go_is_a_dead_letter_not_a_crash(tmp_path: Path) -> None:
    data = jsonl(event("e1", 0, "app_launch"), _deep(300), event("e2", 1_000))
    code, outputs = run_cli(tmp_path, data)
    assert code == 0
    assert outputs is not None
    assert [(d["reason"], d["line"]) for d in outputs["dead_letter"]] == [("invalid_event", 2)]
    assert [r["event_id"] for r in outputs["enriched"]] == ["e1", "e2"]
    assert outputs["summary"]["lines"] == 3
