"""`sessionize run | generate | align`: the commands that need no Kafka."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.cli.common import (
    CliError,
    Command,
    add_config_flag,
    config_from,
    create_output_dir,
    open_input,
    open_output,
    positive_int,
)
from pipeline.vocabulary import MIN_TS_MS, wall_ms


def _input_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", required=True, metavar="FILE", help="JSONL of events or batches; '-' reads stdin"
    )


# run


def _run_flags(parser: argparse.ArgumentParser) -> None:
    _input_flag(parser)
    parser.add_argument(
        "--output-dir", required=True, metavar="DIR", help="where the outputs are written"
    )
    add_config_flag(parser)
    parser.add_argument(
        "--now-ms",
        type=int,
        metavar="MS",
        help="processing time for the future-skew check (default: the wall clock)",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="processes to shard the devices over; the outputs are the same bytes whatever N "
        "(default: the number of cores, here %(default)s)",
    )


def _run(args: argparse.Namespace) -> int:
    from pipeline.offline import run_offline, summary_line
    from pipeline.sharded import run_sharded

    config = config_from(args)
    now_ms = args.now_ms if args.now_ms is not None else wall_ms()
    with open_input(args.input) as source:  # first: a missing input makes no output directory
        output_dir = create_output_dir(Path(args.output_dir))
        if args.jobs == 1:
            summary = run_offline(source, output_dir, config, now_ms)
        else:
            summary = run_sharded(source, output_dir, config, now_ms, args.jobs)
    print(summary_line(summary), file=sys.stderr)
    return 0


RUN = Command(
    name="run",
    summary="offline mode: sessionize a JSONL file (no Kafka)",
    description="Apply the session rules to a JSONL file of events or batches and write "
    "DIR/sessions.jsonl, DIR/enriched.jsonl, DIR/dead_letter.jsonl, DIR/partners/<name>.jsonl "
    "and DIR/summary.json. Exits 0 when the input was read, whatever was rejected.",
    add_flags=_run_flags,
    run=_run,
)


# generate


def _rate(text: str) -> float:
    """An argparse type: a share, from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def _timestamp_ms(text: str) -> int:
    """An argparse type: a time in ms since the epoch, not before 2000 (SPEC section 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < MIN_TS_MS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_TS_MS} (2000-01-01), got {text}")
    return value


def _generate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", type=positive_int, default=1000, help="devices to simulate (default 1000)"
    )
    parser.add_argument(
        "--apps", type=positive_int, default=3, help="apps the devices spread over (default 3)"
    )
    parser.add_argument(
        "--events-per-device", type=positive_int, default=40, help="about this many events each"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        help="events per SDK upload (1: single events)",
    )
    parser.add_argument(
        "--duplicate-rate", type=_rate, default=0.01, help="share of events retried (0 to 1)"
    )
    parser.add_argument(
        "--bad-rate", type=_rate, default=0.001, help="share of bad messages (0 to 1)"
    )
    parser.add_argument(
        "--start-ms", type=_timestamp_ms, help="time of the first event (default: fixed)"
    )
    parser.add_argument(
        "--output", "-o", default="-", metavar="FILE", help="JSONL file ('-': stdout)"
    )


def _generate(args: argparse.Namespace) -> int:
    from pipeline.workload.generator import WorkloadSpec, generate_messages

    fields = {
        "devices": args.devices,
        "apps": args.apps,
        "events_per_device": args.events_per_device,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "duplicate_rate": args.duplicate_rate,
        "bad_rate": args.bad_rate,
    }
    if args.start_ms is not None:
        fields["start_ms"] = args.start_ms
    try:
        spec = WorkloadSpec(**fields)
    except ValueError as exc:  # the flags' types check each one; this is the spec's last word
        raise CliError(str(exc)) from None
    target = open_output(args.output)
    lines = 0
    for message in generate_messages(spec):
        target.write(message + b"\n")
        lines += 1
    target.flush()
    print(f"wrote {lines} messages", file=sys.stderr)
    return 0


GENERATE = Command(
    name="generate",
    summary="write a realistic synthetic workload as JSONL",
    description="Simulate devices launching, backgrounding, resuming within and past the "
    "timeout, terminating, force-quitting, setting attributes, with SDK retries and a few bad "
    "messages. Seeded and reproducible.",
    add_flags=_generate_flags,
    run=_generate,
)


# align


def _align_flags(parser: argparse.ArgumentParser) -> None:
    _input_flag(parser)
    add_config_flag(parser)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also compare kit timeouts of 10 s to 30 min against the pipeline's sessions",
    )


def _align(args: argparse.Namespace) -> int:
    from pipeline.tools.align import align, read_events, render, sweep

    config = config_from(args)
    with open_input(args.input) as source:
        events = read_events(source, config, wall_ms())
    print(render(align(events, config)))
    if args.sweep:
        print()
        print(render(sweep(events, config)))
    return 0


ALIGN = Command(
    name="align",
    summary="compare each partner's own session timeout with the pipeline's",
    description="Kits keep their own sessions (Braze 10 s, Amplitude 5 min, GA4/Mixpanel "
    "30 min). For each configured partner, report how many sessions its session_timeout_s "
    "gives against the pipeline's, and the share of events whose session has the same "
    "boundaries under both, so you can pick kit settings that line up.",
    add_flags=_align_flags,
    run=_align,
)

COMMANDS = (RUN, GENERATE, ALIGN)
