"""What every `sessionize` command shares: its errors and exit codes, the shared flags, reading
the config, opening the files it was given, and running what it asks of Kafka.

Exit codes: 0 done; 2 the command cannot run as asked (bad flag, bad config, missing file);
3 Kafka could not be used (broker unreachable, refused SASL or TLS, unknown topic, a topic
whose max.message.bytes cannot hold the pipeline's records; a worker fenced or refused by the
brokers); 1 a worker stopped by a bug; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, TypeVar

from pipeline.config import Config, load_config
from pipeline.kafka.connection import BROKER_TIMEOUT_S

EXIT_USAGE = 2
EXIT_KAFKA = 3
EXIT_INTERRUPTED = 130

_T = TypeVar("_T")


class CliError(Exception):
    """A problem the user can act on; its message is printed as one line."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: its name, its one-line summary and --help text, its flags, what it runs.

    `run` gets the parsed flags and returns the exit code.
    """

    name: str
    summary: str
    description: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# Shared flags


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """--config, shared by every command that reads settings."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (env: SESSIONIZE_CONFIG); SESSIONIZE_* variables override it",
    )


def add_bootstrap_flag(parser: argparse.ArgumentParser) -> None:
    """--bootstrap, shared by every command that talks to Kafka."""
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers, comma-separated (env: SESSIONIZE_BOOTSTRAP)",
    )


def add_timeout_flag(parser: argparse.ArgumentParser) -> None:
    """--timeout: how long to wait for unreachable brokers."""
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=BROKER_TIMEOUT_S,
        metavar="S",
        help=f"give up on brokers silent for S seconds (default {BROKER_TIMEOUT_S:g})",
    )


def add_topic_flag(parser: argparse._ActionsContainer, default_help: str) -> None:
    """--topic, with what it defaults to."""
    parser.add_argument("--topic", metavar="NAME", help=f"Kafka topic (default: {default_help})")


def positive_float(text: str) -> float:
    """An argparse type: a number greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


# Settings, files and Kafka


def config_from(args: argparse.Namespace) -> Config:
    """Settings for a command: its --config (or SESSIONIZE_CONFIG), then the environment."""
    path = args.config or os.environ.get("SESSIONIZE_CONFIG")
    config = load_config(path)
    bootstrap = getattr(args, "bootstrap", None)
    if bootstrap:
        config = replace(config, kafka=replace(config.kafka, bootstrap=bootstrap))
    return config


def open_input(name: str) -> IO[bytes]:
    """The input file `name` for reading bytes ('-': stdin); CliError when it cannot be read."""
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


def open_output(name: str) -> IO[bytes]:
    """The output file `name` for writing bytes ('-': stdout); CliError when it cannot be."""
    if name == "-":
        return sys.stdout.buffer
    try:
        return open(name, "wb")
    except OSError as exc:
        raise CliError(f"cannot write {name}: {exc.strerror}") from None


def create_output_dir(path: Path) -> Path:
    """Make the output directory `path` (and its parents); CliError when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create output directory {path}: {exc.strerror}") from None
    return path


def run_kafka_command(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run what a command asks of Kafka; brokers that cannot be used are a CliError, exit 3."""
    from pipeline.kafka.connection import KafkaUnavailable, run_kafka

    try:
        return run_kafka(coroutine)
    except KafkaUnavailable as exc:
        raise CliError(str(exc), EXIT_KAFKA) from None
