"""`sessionize run --jobs N` (`pipeline.sharded`): every output file is the same bytes as with
`--jobs 1`, whatever the input holds: bad lines, batches whose events belong to devices of
different shards, duplicates, timestamps out of order, all five default partners."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.cli.main import main
from pipeline.config import load_config
from pipeline.input import Limits
from pipeline.sharded import run_sharded, shard_of
from pipeline.sharded import shard as shard_module
from pipeline.workload.generator import WorkloadSpec, generate_messages

NOW = 1_800_000_000_000  # after every generated event
T0 = NOW - 86_400_000
Record = dict[str, Any]


@pytest.fixture(autouse=True)
def _no_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("SESSIONIZE_")]:
        monkeypatch.delenv(name)


def device(shard_for_2: int, shard_for_3: int) -> str:
    """A device id in shard `shard_for_2` of 2 and `shard_for_3` of 3."""
    return next(
        name
        for name in (f"dev-x{i}" for i in range(1000))
        if shard_of(name, 2) == shard_for_2 and shard_of(name, 3) == shard_for_3
    )


A, B, C = device(0, 0), device(1, 1), device(0, 2)


def event(event_id: str, ts: int, kind: str = "screen_view", **fields: Any) -> Record:
    base: Record = {"event_id": event_id, "app_id": "app-a", "device_id": A, "type": kind}
    return {**base, "ts": T0 + ts, **fields}


def attribute(event_id: str, ts: int, op: str, key: str, value: Any, **fields: Any) -> Record:
    change = {"op": op, "key": key, "value": value}
    return event(event_id, ts, "session_attribute", attribute=change, **fields)


def tricky_lines() -> list[bytes]:
    """A line of every kind whose owner shard is not simply its device's."""
    dumps = orjson.dumps
    mixed = {
        "app_id": "app-a",
        "device_id": A,
        "events": [
            {"event_id": "m1", "type": "app_launch", "ts": T0 + 5_000},  # inherits A
            {"event_id": "m2", "type": "app_launch", "ts": T0 + 5_001, "device_id": C},
            {"event_id": "m3", "ts": T0 + 5_002},  # no type: a dead letter (shard 0)
            # B's session holds plan="x": an increment is refused (B's shard)
            attribute("m4", 5_003, "increment", "plan", 1, device_id=B),
            {"event_id": "m5", "type": "screen_view", "ts": T0 + 4_000, "device_id": B},
            "not an event",
            attribute("m6", 5_004, "increment", "plan", 2, device_id=C, app_id="app-b"),
        ],
    }
    escaped_batch = (
        b'{"app_id":"app-a","devic\\u0065_id":"' + B.encode() + b'","events":'
        b'[{"event_id":"s1","type":"screen_view","ts":' + str(T0 + 6_000).encode() + b"}]}"
    )
    escaped_event = (
        b'{"event_id":"s2","app_id":"app-a","devic\\u0065_id":"' + C.encode() + b'",'
        b'"type":"screen_view","ts":' + str(T0 + 6_001).encode() + b"}"
    )
    hidden = (  # one "device_id" in the bytes, and an event naming another device, escaped
        b'{"app_id":"app-a","device_id":"' + A.encode() + b'","events":[{"event_id":"h1",'
        b'"devic\\u0065_id":"'
        + B.encode()
        + b'","type":"screen_view","ts":'
        + str(T0 + 6_002).encode()
        + b"}]}"
    )
    long_hidden = hidden.replace(b'"h1"', b'"h2","name":"' + b"n" * 300 + b'"')  # scanned
    twice = (
        b'{"app_id":"app-a","device_id":"' + A.encode() + b'","device_id":"' + B.encode() + b'",'
        b'"events":[{"event_id":"t1","type":"screen_view","ts":' + str(T0 + 7_000).encode() + b"}]}"
    )
    not_a_string = {"app_id": "app-a", "device_id": 7, "events": [event("n1", 7_001)]}
    return [
        b"garbage",
        b"",
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'"a string"',
        b"{",
        dumps(event("a1", 1_000, "app_launch")),
        dumps(event("b1", 1_100, "app_launch", device_id=B, user_id="u-b")),
        dumps(attribute("b2", 1_200, "set", "plan", "x", device_id=B)),
        dumps(event("c1", 900, "app_launch", device_id=C, app_id="app-b")),
        dumps(attribute("c2", 1_300, "set", "plan", "y", device_id=C, app_id="app-b")),
        dumps(event("a1", 1_000, "app_launch")),  # a duplicate
        dumps(event("a2", 500)),  # out of order
        dumps(mixed),
        escaped_batch,
        escaped_event,
        hidden,
        long_hidden,
        twice,
        dumps(not_a_string),
        dumps(event("f1", 10 * 86_400_000)),  # in the future
        dumps(event("o1", -T0)),  # before 2000
        dumps(event("x" * Limits().max_event_bytes, 8_000)),  # too large
        dumps({"app_id": "app-a", "device_id": B, "events": []}),
        dumps(event("r1", 8_500, device_id=B)) + b"\r",  # a CRLF line
        b"\r\x0b\x0c\x1c\x85 \x00",  # line breaks of other kinds inside one line
        dumps(event("a3", 9_000, "app_terminate")),
        dumps(event("b3", 40 * 60_000, "app_launch", device_id=B)),  # after B's timeout
    ]


def workload(tmp_path: Path) -> Path:
    """Generated traffic (single events, then batches: the same devices and ids twice, so
    duplicates and time going back) with the tricky lines spread through it."""
    common: dict[str, Any] = {"devices": 60, "apps": 3, "duplicate_rate": 0.05, "bad_rate": 0.03}
    singles = list(generate_messages(WorkloadSpec(**common, events_per_device=12, seed=3)))
    batches = list(generate_messages(WorkloadSpec(**common, events_per_device=12, batch_size=6)))
    tricky = tricky_lines()
    lines = singles[:200] + tricky[:12] + singles[200:] + tricky[12:] + batches + tricky
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def run_cli(source: Path, output_dir: Path, *flags: str) -> dict[str, bytes]:
    argv = ["run", "--input", str(source), "--output-dir", str(output_dir), "--now-ms", str(NOW)]
    assert main([*argv, *flags]) == 0
    return files_of(output_dir)


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file under `directory`, by relative path."""
    paths = sorted(p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): p.read_bytes() for p in paths}


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The input and what `--jobs 1` writes for it."""
    tmp_path = tmp_path_factory.mktemp("single")
    source = workload(tmp_path)
    return source, run_cli(source, tmp_path / "out", "--jobs", "1")


def test_the_workload_has_every_kind_of_input(single: tuple[Path, dict[str, bytes]]) -> None:
    _, files = single
    summary = orjson.loads(files["summary.json"])
    assert set(summary["dead_letters"]) == {
        "malformed_json",
        "invalid_event",
        "timestamp_out_of_range",
        "too_large",
        "attribute_not_numeric",
    }
    assert summary["duplicates"] > 0 and summary["sessions_started"] > 100
    assert set(summary["partner_records"]) == {"amplitude", "braze", "canonical", "ga4", "mixpanel"}
    enriched = [orjson.loads(line) for line in files["enriched.jsonl"].splitlines()]
    mixed = {r["event_id"]: r["device_id"] for r in enriched if r["event_id"][0] in "msh"}
    assert mixed.items() >= {"m1": A, "m2": C, "m5": B, "s1": B, "s2": C, "h1": B, "h2": B}.items()
    dead = [orjson.loads(line) for line in files["dead_letter.jsonl"].splitlines()]
    refused = [d["payload"] for d in dead if d["reason"] == "attribute_not_numeric"]
    assert any('"m4"' in payload for payload in refused)
    assert any('"m6"' in payload for payload in refused)


@pytest.mark.parametrize("jobs", [2, 3])
def test_jobs_write_the_same_bytes_as_one_process(
    single: tuple[Path, dict[str, bytes]], tmp_path: Path, jobs: int
) -> None:
    source, expected = single
    assert run_cli(source, tmp_path / "out", "--jobs", str(jobs)) == expected


def test_spawned_processes_write_the_same_bytes(
    single: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    source, expected = single
    with source.open("rb") as handle:
        run_sharded(handle, tmp_path, load_config(None, env={}), NOW, 2, method="spawn")
    assert files_of(tmp_path) == expected


def test_stdin_is_read_once_and_sharded(
    single: tuple[Path, dict[str, bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, expected = single
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(source.read_bytes())))
    output_dir = tmp_path / "out"
    argv = ["run", "--input", "-", "--output-dir", str(output_dir), "--now-ms", str(NOW)]
    assert main([*argv, "--jobs", "2"]) == 0
    assert files_of(output_dir) == expected


def test_more_jobs_than_devices_and_an_empty_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    expected = run_cli(empty, tmp_path / "one", "--jobs", "1")
    assert run_cli(empty, tmp_path / "many", "--jobs", "5") == expected
    assert expected["sessions.jsonl"] == b"" and len(expected) == 9


def test_a_failing_shard_fails_the_run_and_leaves_no_work_files(
    single: tuple[Path, dict[str, bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _ = single

    def fail(*_args: Any) -> None:
        raise RuntimeError("a shard could not start")

    monkeypatch.setattr(shard_module._Shard, "__init__", fail)  # forked: the shards see it
    with source.open("rb") as handle, pytest.raises(RuntimeError, match="could not start"):
        run_sharded(handle, tmp_path, load_config(None, env={}), NOW, 2, method="fork")
    assert not list(tmp_path.glob(".sessionize-jobs-*"))
