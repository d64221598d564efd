"""The worker's Faust app, and the process that runs it.

`create_app` builds the Faust app (whole-fetch delivery, `pipeline.streaming.fetches`) with the
worker's agents, timer and rebalance callbacks (`pipeline.streaming.worker`); `run_worker` runs
it until a signal or a fatal error. Faust reads with isolation_level=read_committed here
(`_read_committed_only`), and a fatal error ends the process within FATAL_EXIT_S (`FatalExit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import aiokafka
import faust
from aiokafka.errors import KafkaError

from pipeline.config import Config
from pipeline.kafka.clients import max_request_size
from pipeline.kafka.outages import client_noise
from pipeline.memory import collect_rarely, keep_freed_memory
from pipeline.observe.logs import configure as configure_logs
from pipeline.observe.web import Listener, WebService
from pipeline.streaming.fetches import FetchApp
from pipeline.streaming.membership import StaticMemberAssignor
from pipeline.streaming.recovery import fence_previous_instance
from pipeline.streaming.stores import store_url
from pipeline.streaming.worker import SessionWorker

log = logging.getLogger("sessionize.worker")

# A fatal error ends the process within this: a clean stop if it comes in time, else a hard one.
FATAL_EXIT_S = 8.0
EXIT_KAFKA = 3  # as the command line's: Kafka cannot be used (fenced, refused)
EXIT_BUG = 1


def create_app(
    config: Config, partitions: int | None = None, web_url: str | None = None
) -> tuple[FetchApp, SessionWorker]:
    """The Faust app of the worker, with its agents and timer; `web_url`: the worker's web
    address, which Faust's assignor tells the group (`pipeline.observe.status`)."""
    partitions = partitions or config.topics.partitions
    settings = config.worker
    # One directory per instance: workers sharing a disk must not share a RocksDB store.
    datadir = Path(settings.data_dir) / settings.instance_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = FetchApp(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in config.kafka.bootstrap.split(",")],
        broker_credentials=_credentials(config),
        store=store_url(settings.store),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=partitions,
        topic_replication_factor=config.topics.replication,
        web_enabled=False,  # the worker's endpoint is its own (pipeline.observe.web)
        canonical_url=web_url or "http://127.0.0.1:0",
        datadir=str(datadir),
        table_standby_replicas=0,
        producer_linger_ms=5,
        producer_max_request_size=max_request_size(config),
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=4096,
        # Bigger fetches: with batches of events per message, 1 MiB caps a fast consumer.
        consumer_max_fetch_size=8 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        # Messages are acked at checkpoints, which stop with the worker: don't wait for acks.
        stream_wait_empty=False,
        # Static group membership (pipeline.streaming.membership): a worker restarted under
        # its instance_id takes its partitions back at once, even after SIGKILL; one gone for
        # good keeps them until its membership lapses (broker_session_timeout).
        consumer_group_instance_id=settings.instance_id if settings.static_membership else None,
        PartitionAssignor=StaticMemberAssignor,  # see pipeline.streaming.membership
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
    _read_committed_only()
    worker = SessionWorker(app, config, partitions)

    async def subscribe(stream: Any) -> None:
        # Faust subscribes to the topics agents read; their records go to on_fetch instead.
        async for _ in stream.noack():
            pass

    app.agent(worker.input_topic, name="sessionize-input")(subscribe)
    app.agent(worker.repartition_topic, name="sessionize-by-device")(subscribe)
    app.deliver_fetches(
        [worker.input_topic.get_topic_name(), worker.repartition_topic.get_topic_name()],
        worker.on_fetch,
    )
    app.timer(settings.tick_s, name="sessionize-expiry")(worker.on_tick)

    async def revoked(sender: Any, revoked: Any, **_: Any) -> None:
        await worker.on_revoked(revoked)

    async def shutdown(sender: Any, **_: Any) -> None:
        await worker.on_shutdown()

    async def assigned(sender: Any, assigned: Any, **_: Any) -> None:
        worker.watch_recovery()

    app.on_partitions_revoked.connect(revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(assigned)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(shutdown)  # type: ignore[arg-type]
    return app, worker


def _credentials(config: Config) -> Any:
    kafka = config.kafka
    options = kafka.client_options()
    if kafka.sasl_mechanism:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=options.get("ssl_context"),
        )
    if "ssl_context" in options:
        return faust.SSLCredentials(options["ssl_context"])
    return None


def _read_committed_only() -> None:
    # Faust picks read_committed only for its own exactly_once mode, whose producer cannot
    # write tables; the worker does its own transactions, so Faust's consumer must skip
    # records of aborted ones (changelog recovery included).
    consumer_class = aiokafka.AIOKafkaConsumer
    if getattr(consumer_class, "_sessionize_read_committed", False):
        return

    class ReadCommittedConsumer(consumer_class):  # type: ignore[misc, valid-type]
        _sessionize_read_committed = True

        def __init__(self, *topics: str, **options: Any) -> None:
            options["isolation_level"] = "read_committed"
            super().__init__(*topics, **options)

    aiokafka.AIOKafkaConsumer = ReadCommittedConsumer


class FatalExit:
    """Ends the process after a fatal error, with a non-zero exit code, within FATAL_EXIT_S.

    The worker first stops as on SIGTERM (it leaves its consumer group, so others take over at
    once, and commits nothing: the fetch or tick that failed is not whole); should that not end
    the process in time, it exits there and then. Called from any thread.
    """

    def __init__(self) -> None:
        self.code: int | None = None

    def __call__(self, reason: BaseException) -> None:
        if self.code is not None:
            return
        self.code = EXIT_KAFKA if isinstance(reason, KafkaError) else EXIT_BUG
        log.critical(
            "the worker stops (exit %d) after %s: %s", self.code, type(reason).__name__, reason
        )
        hard_stop = threading.Timer(FATAL_EXIT_S, self.exit_now)
        hard_stop.daemon = True
        hard_stop.start()
        os.kill(os.getpid(), signal.SIGTERM)

    def exit_now(self) -> None:
        """End the process at once with the exit code."""
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(self.code if self.code is not None else EXIT_BUG)


class _Worker(faust.Worker):
    log_format = "text"

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        configure_logs(logger, level, self.log_format)
        for handler in logger.handlers:  # a broker outage: a few lines, not thousands
            handler.addFilter(client_noise)


def run_worker(
    config: Config,
    partitions: int,
    loglevel: str = "info",
    log_format: str = "text",
    listener: Listener | None = None,
) -> None:
    """Run a worker until SIGINT/SIGTERM, or until a fatal error ends it (SystemExit with a
    non-zero code). Its topics must have been prepared (`pipeline.kafka.topics`); its web
    endpoint serves on `listener` (None: none)."""
    keep_freed_memory()  # records are freed after every send: reuse the memory
    collect_rarely()  # device states are long-lived: don't keep re-scanning them
    asyncio.run(fence_previous_instance(config))
    app, session_worker = create_app(config, partitions, listener.url if listener else None)
    fatal = FatalExit()
    app.crash_handler = fatal
    web = WebService(session_worker, listener)
    worker = _Worker(app, web, loglevel=loglevel.upper(), quiet=True)
    worker.log_format = log_format
    # Faust's terminal spinner turns the root logger to DEBUG so that it "spins for every log
    # message": every aiokafka send then builds a log record. No spinner, no such cost.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    finally:
        if fatal.code is not None:
            raise SystemExit(fatal.code)
