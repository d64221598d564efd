"""`python -m pipeline.kafka.local up | down | address`: a local broker in the background, for
`make kafka-up` / `make kafka-down`. Errors are one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.kafka.local.probe import answers_metadata
from pipeline.kafka.local.process import READY_TIMEOUT_S, STATE_FILE, running, start, wait_ready
from pipeline.kafka.local.tooling import LocalKafkaError, exclusive_lock

DEFAULT_DATA_DIR = Path(".kafka")


def _up(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    # Two `up`s at once must not start two brokers on one data dir.
    with exclusive_lock(data_dir / ".lock"):
        if (broker := running(data_dir)) is not None:
            wait_ready(broker, READY_TIMEOUT_S)
            return broker.bootstrap
        return start(data_dir).bootstrap


def _down(data_dir: Path) -> str:
    broker = running(data_dir)
    if broker is None:
        (data_dir / STATE_FILE).unlink(missing_ok=True)
        return f"no broker running from {data_dir}"
    broker.stop()
    return f"stopped the broker at {broker.bootstrap} (pid {broker.pid})"


def _address(data_dir: Path) -> str:
    broker = running(data_dir)
    if broker is None or not answers_metadata(broker.bootstrap):
        raise LocalKafkaError(f"no broker answering from {data_dir}; start one with `up`")
    return broker.bootstrap


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``up`` / ``down`` / ``address``; errors are one line on stderr, exit 2."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.kafka.local", description="A local Kafka broker on 127.0.0.1."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (
        ("up", "start a broker in the background (or find the running one); print its address"),
        ("down", "stop the broker started by `up`"),
        ("address", "print the address of the running broker"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    arguments = parser.parse_args(argv)
    data_dir: Path = arguments.data_dir
    try:
        if arguments.command == "up":
            print(_up(data_dir))
        elif arguments.command == "address":
            print(_address(data_dir))
        else:
            print(_down(data_dir), file=sys.stderr)
    except LocalKafkaError as error:
        print(f"localkafka: {error.summary}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
