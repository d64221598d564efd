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
from pipeline.config import TopicSettings, WorkerSettings


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


_TOPICS = TopicSettings()
_WORKER = WorkerSettings()

WORKER = Command(
    name="worker",
    summary="run a streaming worker (Faust) against Kafka",
    description="Run one streaming worker: it applies the session rules to the raw events of "
    "the input topic as they arrive and writes what they make, exactly once, until SIGINT or "
    "SIGTERM.\n\n"
    f"Reads: the input topic ([topics] input, default {_TOPICS.input}), and its own internal "
    "topic "
    "<app_id>-events.by-device, to which events keyed by anything but their device id are "
    "forwarded onto their device's partition. "
    "Writes: session_start and session_end records to [topics] sessions (default "
    f"{_TOPICS.sessions}), events tagged with their session to [topics] enriched "
    f"({_TOPICS.enriched}), dead letters to [topics] deadletter ({_TOPICS.deadletter}), each "
    "configured partner's records to its topic "
    "(partner.<name>), and the device table to its changelog <app_id>-devices-changelog, which "
    "a restarted worker recovers from. Outputs, changelog writes and consumed offsets are "
    "committed in one Kafka transaction every [worker] checkpoint_every messages "
    f"({_WORKER.checkpoint_every}) or commit_interval_s ({_WORKER.commit_interval_s:g} s), "
    "whichever comes first; read the outputs with "
    "isolation_level=read_committed (sessionize consume does) to see each record once. Creates "
    "missing topics (its internal ones too) and refuses to start, exit 3, on a topic whose "
    "max.message.bytes cannot hold its records.\n\n"
    "Config: --config FILE or SESSIONIZE_CONFIG, then SESSIONIZE_<SECTION>_<KEY> variables "
    "(SESSIONIZE_BOOTSTRAP for [kafka] bootstrap), then --bootstrap; config/sessionize.toml "
    f"lists every key. [worker] app_id ({_WORKER.app_id}): the consumer group and the prefix "
    f"of the internal topics; grace_s ({_WORKER.grace_s:g}): extra wait before a quiet session "
    f"is closed; tick_s ({_WORKER.tick_s:g}): how often due sessions are looked for; "
    f"checkpoint_every, commit_interval_s: above; store ({_WORKER.store}): where the device "
    "table lives, rocksdb (on disk, bounded memory, a restart reads only the changelog "
    "written since) or memory (every device in memory, recovered from the whole changelog at "
    f"each start); rocksdb_memory_mb ({_WORKER.rocksdb_memory_mb}): what RocksDB keeps in "
    "memory, all partitions together (one block cache, the memtables charged to it); "
    f"cached_devices ({_WORKER.cached_devices}): decoded device states kept "
    f"between commits; device_ttl_days ({_WORKER.device_ttl_days:g}): a device with no "
    "session open and no message for this long leaves the table (0: never); data_dir "
    f"({_WORKER.data_dir}): Faust's data directory, one subdirectory per instance_id; "
    "web_enabled (true), web_host (127.0.0.1), web_port "
    f"({_WORKER.web_port}; 0: any free port): the worker's HTTP endpoint, GET /metrics "
    "(Prometheus), /healthz, /ready and /sessions/<app_id>/<device_id> (sessionize lookup); "
    f"progress_interval_s ({_WORKER.progress_interval_s:g}): how often a progress line is "
    "logged.\n\n"
    "[worker] instance_id names this worker's transactional producer, <app_id>-<instance_id>; "
    "it defaults to the host name (as a StatefulSet pod gets: sessionize-0, sessionize-1). It "
    "must be unique per worker and stable across its restarts: a restarted worker fences its "
    "predecessor's open transaction, and two running workers with the same instance_id fence "
    "each other. To share the partitions, start more workers with the same config, one per "
    "host; on one host, give each its own (SESSIONIZE_WORKER_INSTANCE_ID=b). static_membership "
    "(true): the worker joins its consumer group under its instance_id, so a restarted worker "
    "takes its partitions back at once, without a rebalance; one stopped for good holds them "
    "until its membership lapses (10 s). false: it leaves the group when it stops.\n\n"
    "Exit codes: 0 stopped by SIGINT/SIGTERM, after a clean shutdown; 2 bad flag or config; "
    "3 Kafka unusable at start-up, or a fatal Kafka error later (fenced by a newer instance, "
    "refused by the brokers); 1 a bug. A fatal error ends the worker within 10 s. Transient "
    "broker errors (an outage) are retried, never an exit.",
    add_flags=_worker_flags,
    run=_worker,
)
