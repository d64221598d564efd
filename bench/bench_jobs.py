"""Offline `--jobs` benchmark (not a test): one process against N, same input, same outputs.

Generates the 1,000,000-event workload of `bench/bench_offline.py` (100,000 devices, seed 0;
single events and batches of 20) and runs offline mode over it with the canonical outputs only
(a config with a single canonical partner, as bench_offline's scenarios (a) and (c)), in a fresh
child process per run: `run_offline` for `--jobs 1`, `pipeline.sharded.run_sharded` for the
others. Rounds are interleaved (jobs 1, jobs 2, jobs 1, jobs 2, ...) so that both see the same
machine; every run's output files are hashed and must equal the first run's.

events/s counts applied events + duplicates + dead letters per wall second of the run alone
(start-up of the worker processes and the merge included); CPU s is user + system time of the
run's process and its children.

    .venv/bin/python bench/bench_jobs.py                       # jobs 1 and 2, 3 rounds
    .venv/bin/python bench/bench_jobs.py --jobs 1 2 3 --rounds 5 --batch-size 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config, load_config
from pipeline.offline import run_offline
from pipeline.partners import Partner
from pipeline.sharded import run_sharded
from pipeline.workload.generator import WorkloadSpec, write_jsonl

NOW_MS = 1_800_000_000_000  # after every generated event


def canonical_config(partners: str) -> Config:
    """The defaults with the canonical outputs only (`partners`: "canonical" keeps the single
    canonical partner file, as bench_offline does; "none" has no partner at all)."""
    defaults = load_config(None, env={})
    if partners == "all":
        return defaults
    chosen = (
        (Partner(name="canonical", format="canonical", topic="partner.canonical"),)
        if partners == "canonical"
        else ()
    )
    return Config(sessions=defaults.sessions, limits=defaults.limits, partners=chosen)


def cpu_seconds() -> float:
    """User + system time of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def digest(directory: Path) -> str:
    """One hash of every output file's path and bytes."""
    total = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        total.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                total.update(block)
    return total.hexdigest()


def run_one(input_path: Path, jobs: int, partners: str) -> dict[str, Any]:
    """One run, measured (in a child process of the benchmark)."""
    config = canonical_config(partners)
    with tempfile.TemporaryDirectory(prefix="bench-jobs-out-") as directory:
        output_dir = Path(directory)
        with input_path.open("rb") as source:
            cpu_started = cpu_seconds()
            started = time.perf_counter()
            if jobs == 1:
                summary = run_offline(source, output_dir, config, NOW_MS)
            else:
                summary = run_sharded(source, output_dir, config, NOW_MS, jobs)
            seconds = time.perf_counter() - started
            cpu = cpu_seconds() - cpu_started
        outputs = digest(output_dir)
    events = summary.events_applied + summary.duplicates + sum(summary.dead_letters.values())
    return {"jobs": jobs, "seconds": seconds, "cpu_s": cpu, "events": events, "digest": outputs}


def run_in_child(input_path: Path, jobs: int, partners: str) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--run-one",
        str(jobs),
        "--input",
        str(input_path),
        "--partners",
        partners,
    ]
    done = subprocess.run(command, capture_output=True, check=True, text=True)
    measured: dict[str, Any] = json.loads(done.stdout)
    return measured


def benchmark(args: argparse.Namespace) -> None:
    spec = WorkloadSpec(
        devices=args.devices,
        events_per_device=max(1, round(args.events / args.devices)),
        batch_size=args.batch_size,
        seed=args.seed,
    )
    print(
        f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start; "
        f"batch size {args.batch_size}, partners: {args.partners}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-jobs-in-") as directory:
        path = Path(directory) / "input.jsonl"
        lines = write_jsonl(spec, path)
        print(f"input: {lines:,} lines, {path.stat().st_size / 2**20:,.0f} MiB", flush=True)
        runs: dict[int, list[dict[str, Any]]] = {jobs: [] for jobs in args.jobs}
        reference = None
        for round_number in range(1, args.rounds + 1):
            for jobs in args.jobs:
                measured = run_in_child(path, jobs, args.partners)
                reference = reference or measured["digest"]
                if measured["digest"] != reference:
                    raise SystemExit(f"--jobs {jobs} wrote other outputs than the first run")
                runs[jobs].append(measured)
                rate = measured["events"] / measured["seconds"]
                print(
                    f"round {round_number}, jobs {jobs}: {measured['seconds']:.2f} s, "
                    f"{rate:,.0f} events/s, CPU {measured['cpu_s']:.1f} s, "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    print(f"\noutputs identical in every run; load average {os.getloadavg()[0]:.2f} at end\n")
    print("| jobs | median s | median events/s | events/s range | CPU s | x jobs 1 (median) |")
    print("|---:|---:|---:|---:|---:|---:|")
    base = statistics.median(r["seconds"] for r in runs[args.jobs[0]])
    for jobs, measured in runs.items():
        seconds = statistics.median(r["seconds"] for r in measured)
        rates = sorted(r["events"] / r["seconds"] for r in measured)
        cpu = statistics.median(r["cpu_s"] for r in measured)
        print(
            f"| {jobs} | {seconds:.2f} | {measured[0]['events'] / seconds:,.0f} "
            f"| {rates[0]:,.0f}-{rates[-1]:,.0f} | {cpu:.1f} | {base / seconds:.2f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000, help="about this many events")
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--partners",
        choices=("canonical", "none", "all"),
        default="canonical",
        help="canonical: the one canonical partner file (as bench_offline); none; all five",
    )
    parser.add_argument("--run-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        print(json.dumps(run_one(args.input, args.run_one, args.partners)))
        return 0
    benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
