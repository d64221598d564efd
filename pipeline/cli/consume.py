"""`sessionize consume`: print the messages of an output topic."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import orjson

from pipeline.cli.common import (
    CliError,
    Command,
    add_bootstrap_flag,
    add_config_flag,
    add_timeout_flag,
    add_topic_flag,
    config_from,
    positive_int,
    run_kafka_command,
)
from pipeline.config import Config

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord


def _consume_flags(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    add_topic_flag(which, "the configured sessions topic")
    which.add_argument(
        "--partner", metavar="NAME", help="read the topic of this configured partner"
    )
    parser.add_argument(
        "--pretty",
        action="store_true",
        help="indented JSON with topic, partition, offset and key (default: one value per line)",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest message (the default, as kcat does)",
    )
    start.add_argument(
        "--from-end",
        action="store_true",
        help="only messages newer than the start (with --follow: what arrives from now on)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep reading new messages (default: stop once caught up with the start's end)",
    )
    parser.add_argument("--max", type=positive_int, metavar="N", help="stop after N messages")
    parser.add_argument(
        "--group",
        metavar="ID",
        help="read as this consumer group: resume at and commit its offsets (default: no group)",
    )
    add_config_flag(parser)
    add_bootstrap_flag(parser)
    add_timeout_flag(parser)


def _consume(args: argparse.Namespace) -> int:
    from pipeline.kafka.reader import read_topics

    config = config_from(args)
    topic = args.topic or config.topics.sessions
    if args.partner is not None:
        topic = partner_topic(config, args.partner)
    output = RecordWriter(sys.stdout.buffer, args.pretty)
    if args.follow:  # it may wait a long time for the next message: say what for, first
        print(f"sessionize consume: {_what_is_read(topic, args)}; Ctrl-C stops", file=sys.stderr)
    count = run_kafka_command(
        read_topics(
            config,
            [topic],
            output.write,
            from_beginning=not args.from_end,
            follow=args.follow,
            limit=args.max,
            group=args.group,
            timeout_s=args.timeout,
            until=lambda: output.closed,
        )
    )
    hint = ""
    if count == 0 and args.from_end and not (args.follow or args.group):
        hint = " (--from-end reads only messages newer than the start: add --follow to wait)"
    noun = "message" if count == 1 else "messages"
    print(f"read {count} {noun} from {topic}{hint}", file=sys.stderr)
    return 0


def _what_is_read(topic: str, args: argparse.Namespace) -> str:
    start = "the end (new messages only)" if args.from_end else "the oldest message"
    if args.group:
        start = f"group {args.group}'s committed offsets (where it has none: {start})"
    return f"reading {topic} from {start}, then waiting for new messages"


def partner_topic(config: Config, name: str) -> str:
    """The topic of the configured partner `name`; CliError listing the known ones."""
    for partner in config.partners:
        if partner.name == name:
            return partner.topic
    known = ", ".join(sorted(p.name for p in config.partners)) or "none configured"
    raise CliError(f"unknown partner '{name}' (known: {known})")


@dataclass(slots=True)
class RecordWriter:
    """Writes consumed records to a byte stream: the value per line, or pretty JSON."""

    stream: IO[bytes]
    pretty: bool
    closed: bool = False  # the reader went away (broken pipe)

    def write(self, record: ConsumerRecord) -> None:
        """Write one record; after a broken pipe, nothing more."""
        if self.closed:
            return
        value: bytes = record.value if record.value is not None else b"null"
        if self.pretty:
            document = {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "key": _text(record.key),
                "value": _json_or_text(value),
            }
            line = orjson.dumps(document, option=orjson.OPT_INDENT_2)
        else:
            line = value
        try:
            self.stream.write(line + b"\n")
            self.stream.flush()
        except BrokenPipeError:
            self.closed = True
            # Python would complain again when flushing stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _json_or_text(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _text(raw)


CONSUME = Command(
    name="consume",
    summary="print the messages of an output topic",
    description="Print the messages of a topic (--topic; default the sessions topic) or of a "
    "configured partner's topic (--partner NAME) to stdout: one JSON value per line, or "
    "--pretty. Reads committed messages only. Starts at the oldest message, as kcat does "
    "(--from-end: only messages newer than the start; with --group: at the group's committed "
    "offsets, and so only where it has none). Without --follow it stops once caught up with "
    "the end offsets seen at the start and says how many it read; with --follow it says on "
    "stderr what it reads, then waits for new messages until Ctrl-C. Exits 3 for an unknown "
    "topic.",
    add_flags=_consume_flags,
    run=_consume,
)
