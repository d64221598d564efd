"""The worker's log: lines a person can read, or JSON lines for a log shipper.

At info (the worker's default) the log says what the worker is and where (one start-up line),
when it is ready, and how it is doing (a progress line every `progress_interval_s`); Faust's,
mode's and aiokafka's own lines show only at debug, except their warnings and errors (whose
repeats during a broker outage `pipeline.kafka.outages` holds back).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import orjson

from pipeline.config import Config
from pipeline.kafka.outages import CLIENT_LOGGERS

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The structured fields of our own lines, for JSON: `log.info(..., extra={FIELDS: {...}})`.
FIELDS = "sessionize"

# The Faust services defined in this package log their start and stop under their module's name.
SERVICE_LOGGERS = ("pipeline.streaming.fetches", "pipeline.observe.web")

log = logging.getLogger("sessionize.worker")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the line's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(root: logging.Logger, level: int, log_format: str) -> None:
    """Format the root logger's handlers; the Kafka clients' and Faust's lines at debug only."""
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    quiet = level > logging.DEBUG
    for name in (*CLIENT_LOGGERS, *SERVICE_LOGGERS):
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.DEBUG)


def package_version() -> str:
    """The installed sessionize version."""
    try:
        return metadata.version("sessionize")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def log_start(config: Config, changelog: str, repartition: str, url: str | None) -> None:
    """The start-up line: what this worker is, what it reads and writes, where to ask it."""
    topics = config.topics
    worker = config.worker
    partners = [p.topic for p in config.partners]
    fields = {
        "event": "start",
        "version": package_version(),
        "instance_id": worker.instance_id,
        "app_id": worker.app_id,
        "bootstrap": config.kafka.bootstrap,
        "input": [topics.input, repartition],
        "outputs": [topics.sessions, topics.enriched, topics.deadletter, *partners],
        "store": f"{worker.store}, changelog {changelog}",
        "web": url,
    }
    log.info(
        "sessionize %s worker %s (group %s) starting: Kafka %s; reads %s (and %s); writes %s, "
        "%s, %s and %d partner topic(s) (%s); device table in %s, kept in %s; web %s",
        fields["version"],
        worker.instance_id,
        worker.app_id,
        config.kafka.bootstrap,
        topics.input,
        repartition,
        topics.sessions,
        topics.enriched,
        topics.deadletter,
        len(partners),
        ", ".join(partners),
        "RocksDB" if worker.store == "rocksdb" else "memory",
        changelog,
        url or "off ([worker] web_enabled = false)",
        extra={FIELDS: fields},
    )
