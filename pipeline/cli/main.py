"""`sessionize`: the command line, one subcommand per `Command` of the modules beside this one.

`pipeline.cli.common` says the exit codes. Every error is one line on stderr, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.cli import consume, demo, lookup, offline, produce, topics, worker
from pipeline.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, CliError, Command
from pipeline.cli.parser import Parser, version
from pipeline.config import ConfigError

# In the order `sessionize --help` lists them.
COMMANDS: tuple[Command, ...] = (
    *offline.COMMANDS,
    worker.WORKER,
    lookup.LOOKUP,
    produce.PRODUCE,
    consume.CONSUME,
    topics.TOPICS,
    demo.DEMO,
)


def build_parser() -> argparse.ArgumentParser:
    """The `sessionize` parser with every subcommand of COMMANDS."""
    parser = Parser(
        prog="sessionize",
        description="Turn raw app lifecycle events into user sessions and hand them to partners.",
        epilog="Exit codes: 0 done, 2 bad usage/config/input, 3 Kafka unusable, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"sessionize {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name, help=command.summary, description=command.description
        )
        command.add_flags(sub)
        sub.set_defaults(run=command.run)
    parser.command_names = tuple(subparsers.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sessionize` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except (CliError, ConfigError) as exc:
        print(f"sessionize {args.command}: error: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, CliError) else EXIT_USAGE
    except KeyboardInterrupt:
        print(f"sessionize {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
