"""The settings of a run, their defaults, and what each config key accepts.

Each `[section]` of the config file is one frozen dataclass; its fields are the section's keys
and their defaults (`SessionConfig` and `Limits` live with the engine and the input they
configure). `SECTIONS` adds, once per key that needs it, the range of a number or the choices
of a string.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.config.keys import (
    SECRET,
    TABLE,
    ConfigError,
    Setting,
    above,
    at_least,
    between,
    one_of,
    section_keys,
)
from pipeline.engine import SessionConfig
from pipeline.input import MAX_DEPTH_LIMIT, MIN_DEAD_LETTER_PAYLOAD_BYTES, Limits
from pipeline.partners import Partner, default_partners
from pipeline.vocabulary import MAX_SESSION_TIMEOUT_S, MIN_SESSION_TIMEOUT_S

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS: Final = ("SSL", "SASL_SSL")
# What aiokafka 0.14 accepts (aiokafka/client.py); OAUTHBEARER is refused at load.
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """How to reach the brokers. Secrets never appear in repr or logs."""

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in TLS_PROTOCOLS:
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=_encrypted_key,
            )
        return options


def _encrypted_key() -> str:
    # Called by OpenSSL for an encrypted key only; without it OpenSSL would prompt on the tty.
    raise ConfigError("[kafka] ssl_keyfile is encrypted: give an unencrypted key file")


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """The pipeline's topic names, and how new ones are created."""

    input: str = "events.raw"
    sessions: str = "sessions"
    enriched: str = "events.enriched"
    deadletter: str = "events.deadletter"
    partitions: int = 4
    replication: int = 1


# The instance id of a host whose name is empty (never seen on Linux; kept from before).
FALLBACK_INSTANCE_ID: Final = "worker-1"


def default_instance_id() -> str:
    """The host name: a StatefulSet pod's own (`sessionize-0`, `sessionize-1`), stable across its
    restarts, so that its successor fences a zombie of it, and different on every host, so that
    two workers started with the same config do not fence each other."""
    return socket.gethostname() or FALLBACK_INSTANCE_ID


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The streaming worker's own knobs."""

    app_id: str = "sessionize"
    grace_s: float = 2.0
    tick_s: float = 0.5
    data_dir: str = ".sessionize-data"
    # The worker's HTTP endpoint (pipeline.observe.web); port 0: any free one (logged at start).
    web_enabled: bool = True
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    progress_interval_s: float = 60.0  # how often the worker logs a progress line
    # Names this worker's transactional producer (`<app_id>-<instance_id>`): stable across
    # restarts, unique per worker.
    instance_id: str = field(default_factory=default_instance_id)
    # Join the consumer group as a static member under instance_id (pipeline.streaming.membership).
    static_membership: bool = True
    checkpoint_every: int = 5000
    commit_interval_s: float = 1.0
    # Where the device table lives: "rocksdb" (on disk under data_dir) or "memory".
    store: str = "rocksdb"
    # What the RocksDB store may keep in memory, all its partitions together (MiB): one block
    # cache for data, index and filter blocks, charged with the memtables (up to a quarter).
    rocksdb_memory_mb: int = 256
    # Decoded device states kept between commits (the table's bytes are the one full copy).
    cached_devices: int = 20_000
    # A device with no open session and no message for this long leaves the table (0: never).
    device_ttl_days: float = 400.0


@dataclass(frozen=True, slots=True)
class Config:
    """All settings of a run."""

    sessions: SessionConfig = field(default_factory=SessionConfig)
    limits: Limits = field(default_factory=Limits)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    partners: tuple[Partner, ...] = field(default_factory=lambda: tuple(default_partners()))


# `[worker] store`: where the device table lives (pipeline.streaming.stores).
STORES: Final = ("rocksdb", "memory")

_TIMEOUT: Final = between(MIN_SESSION_TIMEOUT_S, MAX_SESSION_TIMEOUT_S)

# section -> key -> what it accepts: the dataclass fields, with each number's range declared.
SECTIONS: Final[dict[str, dict[str, Setting]]] = {
    "sessions": section_keys(
        SessionConfig,
        {
            "session_timeout_s": _TIMEOUT,
            "idle_timeout_s": _TIMEOUT,
            "dedup_window_s": at_least(0),
            "dedup_max_ids": at_least(1),
        },
        # Per-app timeouts come from the `apps` tables; a partner kit sets its own timeouts.
        not_keys=("app_session_timeout_s", "honor_event_timeout"),
    )
    | {"apps": TABLE},
    "input": section_keys(
        Limits,
        {
            "max_event_bytes": at_least(1),
            "max_future_skew_s": at_least(0),
            "max_depth": between(1, MAX_DEPTH_LIMIT),
            "max_dead_letter_payload_bytes": at_least(MIN_DEAD_LETTER_PAYLOAD_BYTES),
        },
    ),
    "kafka": section_keys(
        KafkaSettings,
        {
            "security_protocol": one_of(*SECURITY_PROTOCOLS),
            "sasl_mechanism": one_of(*SASL_MECHANISMS),
            "sasl_password": SECRET,
        },
    ),
    "topics": section_keys(TopicSettings, {"partitions": at_least(1), "replication": at_least(1)}),
    "worker": section_keys(
        WorkerSettings,
        {
            "grace_s": at_least(0),
            "tick_s": above(0),
            "web_port": between(0, 65_535),
            "progress_interval_s": above(0),
            "checkpoint_every": at_least(1),
            "commit_interval_s": above(0),
            "store": one_of(*STORES),
            "rocksdb_memory_mb": at_least(16),
            "cached_devices": at_least(0),
            "device_ttl_days": at_least(0),
        },
    ),
}
# A [sessions.apps."<app_id>"] table: the app's own background timeout.
APP_KEYS: Final = {"session_timeout_s": SECTIONS["sessions"]["session_timeout_s"]}
# A [[partners]] table: the fields of a Partner (its sets written as arrays).
PARTNER_KEYS: Final = section_keys(Partner, {"session_timeout_s": _TIMEOUT})
