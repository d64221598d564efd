"""The session timeline page (`pipeline.tools.timeline`)."""

from __future__ import annotations

import io
from pathlib import Path

import orjson

from pipeline.config import load_config
from pipeline.offline import run_offline
from pipeline.tools.timeline import render_timeline
from pipeline.workload.generator import WorkloadSpec
from pipeline.workload.live import TimeWarp, plan_live


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
