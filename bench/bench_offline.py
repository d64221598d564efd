"""Offline-mode throughput benchmark (not a test).

Generates a seeded workload with `pipeline.workload.generator` (1,000,000 events over 100,000
devices by default; generation is timed on its own), then runs `pipeline.offline.run_offline` over
it in-process, in a fresh child process per scenario so that each peak RSS is that scenario's own:

  (a) batch_size 1, canonical outputs only (a config with a single canonical partner)
  (b) batch_size 20, all five default partners
  (c) batch_size 20, canonical outputs only

each `--repeat` times (3 by default: wall times on this shared machine vary by ~10 %), and
prints a markdown table of the median runs: events/s counts applied events + duplicates + dead
letters per wall second of `run_offline` alone (reading, parsing, rules, formatting, writing).

    .venv/bin/python bench/bench_offline.py                 # the full benchmark
    .venv/bin/python bench/bench_offline.py --profile       # cProfile of a 100k-event run
    .venv/bin/python bench/bench_offline.py --ratio         # (b) against (c), interleaved

`--ratio` runs (c) and (b) over the same input in alternating rounds and prints each round's
five-partner / canonical-only ratio of events per wall second and per CPU second: on a shared
machine only numbers measured side by side say what the partners cost.

tracemalloc stays off: it would slow every allocation and distort the numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config, load_config
from pipeline.offline import Summary, run_offline
from pipeline.partners import Partner
from pipeline.workload.generator import WorkloadSpec, write_jsonl

NOW_MS = 1_800_000_000_000  # after every generated event: nothing is "in the future"
PROFILE_EVENTS = 100_000
TOP = 25


@dataclass(frozen=True)
class Scenario:
    """One benchmark configuration."""

    name: str
    batch_size: int
    all_partners: bool

    @property
    def label(self) -> str:
        partners = "all 5 default partners" if self.all_partners else "canonical only"
        return f"({self.name}) batch {self.batch_size}, {partners}"

    def config(self) -> Config:
        defaults = load_config(None, env={})
        if self.all_partners:
            return defaults
        canonical = Partner(name="canonical", format="canonical", topic="partner.canonical")
        return Config(sessions=defaults.sessions, limits=defaults.limits, partners=(canonical,))


SCENARIOS = {
    "a": Scenario("a", batch_size=1, all_partners=False),
    "b": Scenario("b", batch_size=20, all_partners=True),
    "c": Scenario("c", batch_size=20, all_partners=False),
}


def workload(events: int, devices: int, batch_size: int, seed: int) -> WorkloadSpec:
    """About `events` events over `devices` devices (events_per_device is a mean)."""
    return WorkloadSpec(
        devices=devices,
        events_per_device=max(1, round(events / devices)),
        batch_size=batch_size,
        seed=seed,
    )


def events_seen(summary: Summary) -> int:
    """Applied events + duplicates + dead letters."""
    return summary.events_applied + summary.duplicates + sum(summary.dead_letters.values())


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process: less sensitive than wall time to other load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(scenario: Scenario, input_path: Path) -> dict[str, Any]:
    """Run offline mode once over `input_path` and measure it (called in a child process)."""
    config = scenario.config()
    with tempfile.TemporaryDirectory(prefix="bench-out-") as output_dir:
        with input_path.open("rb") as source:
            cpu_started = cpu_seconds()
            started = time.perf_counter()
            summary = run_offline(source, Path(output_dir), config, NOW_MS)
            seconds = time.perf_counter() - started
            cpu = cpu_seconds() - cpu_started
        output_bytes = sum(p.stat().st_size for p in Path(output_dir).rglob("*") if p.is_file())
    events = events_seen(summary)
    return {
        "scenario": scenario.name,
        "lines": summary.lines,
        "events": events,
        "applied": summary.events_applied,
        "duplicates": summary.duplicates,
        "dead_letters": sum(summary.dead_letters.values()),
        "sessions": summary.sessions_started,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "events_per_s": events / seconds,
        "lines_per_s": summary.lines / seconds,
        "peak_rss_mib": peak_rss_mib(),
        "output_mib": output_bytes / 2**20,
    }


def run_in_child(scenario: Scenario, input_path: Path) -> dict[str, Any]:
    """`run_one` in a fresh interpreter, so its ru_maxrss is the scenario's alone."""
    command = [sys.executable, __file__, "--run-one", scenario.name, "--input", str(input_path)]
    result = subprocess.run(command, capture_output=True, check=True, text=True)
    measured: dict[str, Any] = json.loads(result.stdout)
    return measured


def machine() -> str:
    """`nproc` cores and the CPU model name, as lscpu reports it."""
    model = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median events/s, with the range of all runs added."""
    ordered = sorted(runs, key=lambda m: m["events_per_s"])
    middle = dict(ordered[len(ordered) // 2])
    middle["range"] = f"{ordered[0]['events_per_s']:,.0f}-{ordered[-1]['events_per_s']:,.0f}"
    return middle


def benchmark(events: int, devices: int, seed: int, repeat: int) -> None:
    """Generate each scenario's input, run it, print the results as markdown."""
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start")
    print(f"workload: ~{events:,} events over {devices:,} devices, seed {seed}\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-in-") as input_dir:
        for scenario in SCENARIOS.values():
            path = Path(input_dir) / f"batch{scenario.batch_size}.jsonl"
            started = time.perf_counter()
            lines = write_jsonl(workload(events, devices, scenario.batch_size, seed), path)
            generation_s = time.perf_counter() - started
            print(
                f"generated {scenario.label}: {lines:,} lines, "
                f"{path.stat().st_size / 2**20:,.0f} MiB in {generation_s:.1f} s",
                flush=True,
            )
            runs = [run_in_child(scenario, path) for _ in range(repeat)]
            rows.append((scenario, generation_s, median_run(runs)))
            path.unlink()
    print()
    print(
        f"median of {repeat} runs each\n\n"
        "| scenario | lines | events | generate s | run_offline s | CPU s | events/s "
        "| events/s range | lines/s | peak RSS MiB | output MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scenario, generation_s, m in rows:
        print(
            f"| {scenario.label} | {m['lines']:,} | {m['events']:,} | {generation_s:.1f} "
            f"| {m['seconds']:.1f} | {m['cpu_seconds']:.1f} | {m['events_per_s']:,.0f} "
            f"| {m['range']} | {m['lines_per_s']:,.0f} "
            f"| {m['peak_rss_mib']:,.0f} | {m['output_mib']:,.0f} |"
        )
    print(f"\nload average {os.getloadavg()[0]:.2f} at end\n")
    for scenario, _, m in rows:
        print(
            f"{scenario.label}: {m['applied']:,} applied, {m['duplicates']:,} duplicates, "
            f"{m['dead_letters']:,} dead letters, {m['sessions']:,} sessions"
        )


def ratio(events: int, devices: int, seed: int, repeat: int) -> None:
    """Scenarios (c) and (b) over one input, alternating; each round's (b) / (c) ratios."""
    canonical, partners = SCENARIOS["c"], SCENARIOS["b"]
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start")
    print(f"workload: ~{events:,} events over {devices:,} devices, seed {seed}, batch 20\n")
    with tempfile.TemporaryDirectory(prefix="bench-in-") as input_dir:
        path = Path(input_dir) / "batch20.jsonl"
        write_jsonl(workload(events, devices, canonical.batch_size, seed), path)
        print(
            "| round | canonical only events/s | all 5 partners events/s | ratio (wall) "
            "| ratio (CPU) |\n|---:|---:|---:|---:|---:|"
        )
        walls, cpus = [], []
        for number in range(1, repeat + 1):
            alone = run_in_child(canonical, path)
            fanned = run_in_child(partners, path)
            walls.append(fanned["events_per_s"] / alone["events_per_s"])
            cpus.append(alone["cpu_seconds"] / fanned["cpu_seconds"])
            print(
                f"| {number} | {alone['events_per_s']:,.0f} | {fanned['events_per_s']:,.0f} "
                f"| {walls[-1]:.2f} | {cpus[-1]:.2f} |",
                flush=True,
            )
    walls.sort()
    cpus.sort()
    print(
        f"\nmedian ratio {walls[len(walls) // 2]:.2f} (wall), {cpus[len(cpus) // 2]:.2f} (CPU); "
        f"load average {os.getloadavg()[0]:.2f} at end"
    )


def _print_top(stats: pstats.Stats, key: str, title: str) -> None:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    column = 3 if key == "cumulative" else 2
    rows = sorted(raw.items(), key=lambda item: item[1][column], reverse=True)[:TOP]
    print(f"\n### {title} (total {total:.2f} s)\n")
    print("| ncalls | tottime s | tottime % | cumtime s | cumtime % | function |")
    print("|---:|---:|---:|---:|---:|---|")
    for (filename, line, name), (_, calls, tottime, cumtime, _) in rows:
        where = _short(filename)
        function = f"{where}:{line}({name})" if line else name
        print(
            f"| {calls:,} | {tottime:.3f} | {100 * tottime / total:.1f} | {cumtime:.3f} "
            f"| {100 * cumtime / total:.1f} | `{function}` |"
        )


def _short(filename: str) -> str:
    for marker in ("/pipeline/", "/site-packages/", "/lib/python"):
        if marker in filename:
            return filename[filename.index(marker) + 1 :]
    return filename


def profile(events: int, devices: int, seed: int, names: list[str]) -> None:
    """cProfile run_offline on a smaller workload; top functions by cumulative and own time."""
    for name in names:
        scenario = SCENARIOS[name]
        spec = workload(events, devices, scenario.batch_size, seed)
        with tempfile.TemporaryDirectory(prefix="bench-prof-") as directory:
            path = Path(directory) / "input.jsonl"
            write_jsonl(spec, path)
            config = scenario.config()
            profiler = cProfile.Profile()
            with path.open("rb") as source:
                profiler.enable()
                summary = run_offline(source, Path(directory) / "out", config, NOW_MS)
                profiler.disable()
        stats = pstats.Stats(profiler, stream=io.StringIO())
        print(f"\n## Profile {scenario.label}: {events_seen(summary):,} events")
        _print_top(stats, "cumulative", "top by cumulative time")
        _print_top(stats, "tottime", "top by own (total) time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="about this many events")
    parser.add_argument("--devices", type=int, default=100_000, help="over this many devices")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (median shown)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"cProfile a {PROFILE_EVENTS:,}-event run (devices scaled down) instead",
    )
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="profile only these"
    )
    parser.add_argument(
        "--ratio",
        action="store_true",
        help="(b) against (c) over one input, in alternating rounds (--repeat of them)",
    )
    parser.add_argument("--run-one", choices=sorted(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        print(json.dumps(run_one(SCENARIOS[args.run_one], args.input)))
        return 0
    if args.profile:
        devices = max(1, args.devices * PROFILE_EVENTS // args.events)
        profile(PROFILE_EVENTS, devices, args.seed, args.scenario or sorted(SCENARIOS))
        return 0
    if args.ratio:
        ratio(args.events, args.devices, args.seed, args.repeat)
        return 0
    benchmark(args.events, args.devices, args.seed, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
