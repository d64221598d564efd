"""`sessionize topics create | list | describe`: the pipeline's topics."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipeline.cli.common import (
    EXIT_KAFKA,
    CliError,
    Command,
    add_bootstrap_flag,
    add_config_flag,
    add_timeout_flag,
    config_from,
    run_kafka_command,
)


def _topics_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["create", "list", "describe"],
        help="create: make the missing topics; list: which exist; "
        "describe: partitions and replication",
    )
    add_config_flag(parser)
    add_bootstrap_flag(parser)
    add_timeout_flag(parser)


def _topics(args: argparse.Namespace) -> int:
    from pipeline.kafka.connection import admin_call
    from pipeline.kafka.topics import describe, ensure_topics

    config = config_from(args)
    created: list[str] = []
    if args.action == "create":
        created = run_kafka_command(admin_call(config, args.timeout, ensure_topics))
    infos = run_kafka_command(admin_call(config, args.timeout, describe))
    missing = [info.name for info in infos if info.partitions is None]
    header = ["TOPIC", "ROLE", "STATUS"]
    if args.action != "list":
        header += ["PARTITIONS", "REPLICATION"]
    rows = [header]
    for info in infos:
        status = "created" if info.name in created else "exists" if info.partitions else "missing"
        row = [info.name, info.role, status]
        if args.action != "list":
            row += [_or_dash(info.partitions), _or_dash(info.replication)]
        rows.append(row)
    print(_table(rows))
    if args.action == "create" and missing:
        raise CliError(
            f"Kafka at {config.kafka.bootstrap} did not create: {', '.join(missing)}", EXIT_KAFKA
        )
    return 0


def _or_dash(number: int | None) -> str:
    return "-" if number is None else str(number)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


TOPICS = Command(
    name="topics",
    summary="create, list or describe the pipeline's topics",
    description="The pipeline's topics are the input, sessions, enriched and dead-letter "
    "topics and one topic per configured partner, named in the config file. `create` makes the "
    "missing ones with the configured partitions and replication; `list` shows whether each "
    "exists; `describe` shows partitions and replication. Faust's own changelog and "
    "repartition topics are the worker's business.",
    add_flags=_topics_flags,
    run=_topics,
)
