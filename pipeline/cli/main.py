"""`sessionize`: the command line.

Exit codes: 0 done; 2 the command cannot run as asked (bad flag, bad config, missing file);
3 Kafka could not be used (broker unreachable, refused SASL or TLS, unknown topic, a topic
whose max.message.bytes cannot hold the pipeline's records; a worker fenced or refused by the
brokers); 1 a worker stopped by a bug; 130 interrupted.
Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, NoReturn

from pipeline.config import Config, ConfigError, load_config
from pipeline.vocabulary import wall_ms

EXIT_USAGE = 2
EXIT_KAFKA = 3
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A problem the user can act on; its message is printed as one line."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(
    name: str, summary: str, description: str
) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable[[Handler], Handler]]:
    """Register a subcommand: `@command(...)` on its flag builder, then on its handler."""

    def with_flags(
        add_flags: Callable[[argparse.ArgumentParser], None],
    ) -> Callable[[Handler], Handler]:
        def with_handler(handler: Handler) -> Handler:
            _COMMANDS[name] = (summary, description, add_flags, handler)
            return handler

        return with_handler

    return with_flags


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """--config, shared by every command that reads settings."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (env: SESSIONIZE_CONFIG); SESSIONIZE_* variables override it",
    )


def config_from(args: argparse.Namespace) -> Config:
    """Settings for a command: its --config (or SESSIONIZE_CONFIG), then the environment."""
    import os

    path = args.config or os.environ.get("SESSIONIZE_CONFIG")
    config = load_config(path)
    bootstrap = getattr(args, "bootstrap", None)
    if bootstrap:
        from dataclasses import replace

        config = replace(config, kafka=replace(config.kafka, bootstrap=bootstrap))
    return config


def _run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", required=True, metavar="FILE", help="JSONL of events or batches; '-' reads stdin"
    )
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


@command(
    "run",
    "offline mode: sessionize a JSONL file (no Kafka)",
    "Apply the session rules to a JSONL file of events or batches and write DIR/sessions.jsonl, "
    "DIR/enriched.jsonl, DIR/dead_letter.jsonl, DIR/partners/<name>.jsonl and DIR/summary.json. "
    "Exits 0 when the input was read, whatever was rejected.",
)(_run_flags)
def _run(args: argparse.Namespace) -> int:
    from pipeline.offline import run_offline, summary_line

    config = config_from(args)
    output_dir = Path(args.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create output directory {output_dir}: {exc.strerror}") from None
    now_ms = args.now_ms if args.now_ms is not None else wall_ms()
    with _open_input(args.input) as source:
        summary = run_offline(source, output_dir, config, now_ms)
    print(summary_line(summary), file=sys.stderr)
    return 0


def _open_input(name: str) -> IO[bytes]:
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")
    except FileNotFoundError:
        raise CliError(f"input file not found: {name}") from None
    except IsADirectoryError:
        raise CliError(f"input is a directory, not a file: {name}") from None
    except OSError as exc:
        raise CliError(f"cannot read input file {name}: {exc.strerror}") from None


def _generate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", type=int, default=1000, help="devices to simulate (default 1000)"
    )
    parser.add_argument(
        "--apps", type=int, default=3, help="apps the devices spread over (default 3)"
    )
    parser.add_argument(
        "--events-per-device", type=int, default=40, help="about this many events each"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="events per SDK upload (1: single events)"
    )
    parser.add_argument(
        "--duplicate-rate", type=float, default=0.01, help="share of events retried"
    )
    parser.add_argument("--bad-rate", type=float, default=0.001, help="share of bad messages")
    parser.add_argument("--start-ms", type=int, help="time of the first event (default: fixed)")
    parser.add_argument(
        "--output", "-o", default="-", metavar="FILE", help="JSONL file ('-': stdout)"
    )


@command(
    "generate",
    "write a realistic synthetic workload as JSONL",
    "Simulate devices launching, backgrounding, resuming within and past the timeout, "
    "terminating, force-quitting, setting attributes, with SDK retries and a few bad messages. "
    "Seeded and reproducible.",
)(_generate_flags)
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
    if args.devices < 1 or args.batch_size < 1 or args.events_per_device < 1:
        raise CliError("--devices, --batch-size and --events-per-device must be at least 1")
    spec = WorkloadSpec(**fields)
    target = sys.stdout.buffer if args.output == "-" else _open_output(args.output)
    lines = 0
    for message in generate_messages(spec):
        target.write(message + b"\n")
        lines += 1
    target.flush()
    print(f"wrote {lines} messages", file=sys.stderr)
    return 0


def _open_output(name: str) -> IO[bytes]:
    try:
        return open(name, "wb")
    except OSError as exc:
        raise CliError(f"cannot write {name}: {exc.strerror}") from None


def _align_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", required=True, metavar="FILE", help="JSONL of events or batches; '-' reads stdin"
    )
    add_config_flag(parser)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also compare kit timeouts of 10 s to 30 min against the pipeline's sessions",
    )


@command(
    "align",
    "compare each partner's own session timeout with the pipeline's",
    "Kits keep their own sessions (Braze 10 s, Amplitude 5 min, GA4/Mixpanel 30 min). For each "
    "configured partner, report how many sessions its session_timeout_s gives against the "
    "pipeline's, and the share of events whose session has the same boundaries under both, so "
    "you can pick kit settings that line up.",
)(_align_flags)
def _align(args: argparse.Namespace) -> int:
    from pipeline.tools.align import align, read_events, render, sweep

    config = config_from(args)
    with _open_input(args.input) as source:
        events = read_events(source, config, wall_ms())
    print(render(align(events, config)))
    if args.sweep:
        print()
        print(render(sweep(events, config)))
    return 0


def add_bootstrap_flag(parser: argparse.ArgumentParser) -> None:
    """--bootstrap, shared by every command that talks to Kafka."""
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers, comma-separated (env: SESSIONIZE_BOOTSTRAP)",
    )


def _worker_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser)
    add_bootstrap_flag(parser)
    parser.add_argument(
        "--loglevel",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log level (default warning)",
    )


@command(
    "worker",
    "run a streaming worker (Faust) against Kafka",
    "Consume raw events from the input topic, keep one session per device in a Faust table "
    "backed by its changelog, expire sessions on time, and write session records, enriched "
    "events, dead letters and partner records to their topics. Start more workers with the "
    "same config to share the partitions. Creates missing topics (its internal ones too) and "
    "refuses to start, exit 3, on a topic whose max.message.bytes cannot hold its records. "
    "Stops cleanly on SIGINT/SIGTERM; a fatal error (fenced by a newer instance, refused by "
    "the brokers: exit 3; a bug: exit 1) ends it within 10 s.",
)(_worker_flags)
def _worker(args: argparse.Namespace) -> int:
    import asyncio

    from pipeline.kafka.topics import KafkaUnavailable, prepare_worker_topics, quiet_client_log

    config = config_from(args)
    try:
        with quiet_client_log():  # until the worker sets up its own logging
            partitions = asyncio.run(prepare_worker_topics(config))
    except KafkaUnavailable as exc:
        raise CliError(str(exc), EXIT_KAFKA) from None
    from pipeline.streaming.app import run_worker

    run_worker(config, partitions, args.loglevel)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `sessionize` parser with every registered subcommand."""
    _load_commands()
    parser = _Parser(
        prog="sessionize",
        description="Turn raw app lifecycle events into user sessions and hand them to partners.",
        epilog="Exit codes: 0 done, 2 bad usage/config/input, 3 Kafka unusable, 130 interrupted.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (summary, description, add_flags, handler) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=description)
        add_flags(sub)
        sub.set_defaults(handler=handler)
    return parser


def _load_commands() -> None:
    # Each module registers its subcommands with @command when imported.
    import importlib

    for module in ("pipeline.cli.kafka",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sessionize` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except (CliError, ConfigError) as exc:
        print(f"sessionize {args.command}: error: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, CliError) else EXIT_USAGE
    except KeyboardInterrupt:
        print(f"sessionize {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
