"""`sessionize worker`: a streaming worker (Faust) against Kafka."""

from __future__ import annotations

import argparse

from pipeline.cli.common import (
    CliError,
    Command,
    add_bootstrap_flag,
    add_config_flag,
    config_from,
    run_kafka_command,
)


def _worker_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser)
    add_bootstrap_flag(parser)
    parser.add_argument(
        "--loglevel",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info; Faust's and aiokafka's own lines at debug)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log lines as text (default) or as JSON objects, one a line",
    )


def _worker(args: argparse.Namespace) -> int:
    from pipeline.kafka.topics import prepare_worker_topics

    config = config_from(args)
    # Checked before the worker sets up its own logging, so a failure is one line.
    partitions = run_kafka_command(prepare_worker_topics(config))
    from pipeline.observe.web import listen
    from pipeline.streaming.app import run_worker  # Faust: imported once Kafka is usable

    settings = config.worker
    try:
        listener = listen(config) if settings.web_enabled else None
    except OSError as exc:
        where = f"{settings.web_host}:{settings.web_port}"
        raise CliError(f"cannot listen on {where} ([worker] web_host, web_port): {exc}") from None
    run_worker(config, partitions, args.loglevel, args.log_format, listener)
    return 0


WORKER = Command(
    name="worker",
    summary="run a streaming worker (Faust) against Kafka",
    description="Consume raw events from the input topic, keep one session per device in a "
    "Faust table backed by its changelog, expire sessions on time, and write session records, "
    "enriched events, dead letters and partner records to their topics. Start more workers "
    "with the same config to share the partitions. Creates missing topics (its internal ones "
    "too) and refuses to start, exit 3, on a topic whose max.message.bytes cannot hold its "
    "records. Stops cleanly on SIGINT/SIGTERM; a fatal error (fenced by a newer instance, "
    "refused by the brokers: exit 3; a bug: exit 1) ends it within 10 s.",
    add_flags=_worker_flags,
    run=_worker,
)
