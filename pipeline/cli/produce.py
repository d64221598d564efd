"""`sessionize produce`: send events to Kafka, from a JSONL file or generated live.

Live traffic (`--devices N --rate R --duration S`) is planned by `pipeline.workload.live`
(its docstring tells how the workload's gaps are warped onto the wall clock) and sent by
`pipeline.kafka.sending`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO

from pipeline.cli.common import (
    EXIT_KAFKA,
    CliError,
    Command,
    add_bootstrap_flag,
    add_config_flag,
    add_timeout_flag,
    add_topic_flag,
    config_from,
    open_input,
    positive_float,
    positive_int,
    run_kafka_command,
)
from pipeline.vocabulary import wall_ms

DEFAULT_RATE = 100.0
DEFAULT_DURATION_S = 10.0


def _produce_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input",
        metavar="FILE",
        help="JSONL of events or batches, one message per line ('-': stdin); "
        "key: the line's device_id",
    )
    source.add_argument(
        "--devices",
        type=positive_int,
        metavar="N",
        help="instead of a file, generate live traffic of N simulated devices",
    )
    live = parser.add_argument_group("generated traffic (with --devices)")
    live.add_argument(
        "--rate",
        type=positive_float,
        metavar="EVENTS_PER_S",
        help=f"about this many events per second (default {DEFAULT_RATE:g})",
    )
    live.add_argument(
        "--duration",
        type=positive_float,
        metavar="S",
        help=f"seconds to run (default {DEFAULT_DURATION_S:g})",
    )
    live.add_argument("--seed", type=int, metavar="K", help="random seed (default 0)")
    live.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="B",
        help="events per SDK upload (default 1: single events)",
    )
    add_topic_flag(parser, "the configured input topic")
    add_config_flag(parser)
    add_bootstrap_flag(parser)
    add_timeout_flag(parser)


def _produce(args: argparse.Namespace) -> int:
    from pipeline.kafka.sending import produce_lines, produce_live

    config = config_from(args)
    topic = args.topic or config.topics.input
    live_flags = {"--rate": args.rate, "--duration": args.duration, "--seed": args.seed}
    live_flags["--batch-size"] = args.batch_size
    if args.input is not None:
        given = [name for name, value in live_flags.items() if value is not None]
        if given:
            raise CliError(f"{', '.join(given)} go with --devices, not with --input")
        with open_input(args.input) as source:
            stats = run_kafka_command(
                produce_lines(config, topic, source, _size_of(source), args.timeout)
            )
    elif args.devices is not None:
        from pipeline.workload.live import TimeWarp, plan_live
        from pipeline.workload.spec import WorkloadSpec

        rate = args.rate if args.rate is not None else DEFAULT_RATE
        duration = args.duration if args.duration is not None else DEFAULT_DURATION_S
        spec = WorkloadSpec(
            devices=args.devices,
            seed=args.seed or 0,
            batch_size=args.batch_size or 1,
            start_ms=wall_ms(),
        )
        plan = plan_live(spec, TimeWarp.for_sessions(config.sessions), rate, duration)
        stats = run_kafka_command(produce_live(config, topic, plan, args.timeout))
        if plan.best_rate < 0.9 * rate:
            note = f"{args.devices} devices give about {plan.best_rate:.0f} events/s"
            print(f"note: {note}; more --devices would reach {rate:g}", file=sys.stderr)
    else:
        raise CliError("nothing to send: give --input FILE ('-': stdin) or --devices N")
    print(stats.summary_line(), file=sys.stderr)
    return EXIT_KAFKA if stats.failed else 0


def _size_of(source: IO[bytes]) -> int | None:
    try:
        size = os.fstat(source.fileno()).st_size
    except (OSError, ValueError):
        return None
    return size or None


PRODUCE = Command(
    name="produce",
    summary="send events to Kafka, from a JSONL file or generated live",
    description="Send raw events or batches to the input topic, keyed by device id. From a "
    "JSONL file (--input, '-' for stdin), as fast as the producer batches them; or generated "
    "live (--devices N --rate EVENTS_PER_S --duration S --seed K [--batch-size B]): simulated "
    "devices launch, use, background, resume, terminate and crash with their event times on "
    "the wall clock, gaps scaled so that sessions time out under the configured "
    "session_timeout_s as the generator intended. Shows progress on a terminal and ends with "
    "one summary line (sent, failed, events/s). Exits 3 when a message could not be sent.",
    add_flags=_produce_flags,
    run=_produce,
)
