"""The live traffic plan of `produce --devices` and the demo (pure): the warp keeps every
timeout boundary, the rate holds over the run, event time is send time."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import load_config
from pipeline.engine import SessionConfig
from pipeline.offline import run_offline
from pipeline.vocabulary import MIN_TS_MS
from pipeline.workload.generator import WorkloadSpec, generate_messages
from pipeline.workload.live import LivePlan, TimeWarp, plan_live

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
