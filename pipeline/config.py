"""Settings: defaults, then the TOML config file, then `SESSIONIZE_*` environment variables.

Every problem (unreadable file, bad TOML, unknown key, wrong type, unknown partner format, two
partners on one topic) raises ConfigError with one line a person can act on.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.engine import SessionConfig
from pipeline.events import Limits
from pipeline.partners import FORMATS, Partner, default_partners

ENV_PREFIX = "SESSIONIZE_"


class ConfigError(Exception):
    """A setting that cannot be used; the message is one line for a person."""


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
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        return options


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """The pipeline's topic names, and how new ones are created."""

    input: str = "events.raw"
    sessions: str = "sessions"
    enriched: str = "events.enriched"
    deadletter: str = "events.deadletter"
    partitions: int = 4
    replication: int = 1


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The streaming worker's own knobs."""

    app_id: str = "sessionize"
    grace_s: float = 2.0
    tick_s: float = 0.5
    data_dir: str = ".sessionize-data"
    web_port: int = 6066
    web_enabled: bool = False
    # Names this worker's transactional producer; stable across restarts, unique per worker.
    instance_id: str = "worker-1"
    checkpoint_every: int = 5000
    commit_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Config:
    """All settings of a run."""

    sessions: SessionConfig = field(default_factory=SessionConfig)
    limits: Limits = field(default_factory=Limits)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    partners: tuple[Partner, ...] = field(default_factory=lambda: tuple(default_partners()))


# section -> key -> accepted types; the dataclass defaults are the defaults.
_SECTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    "sessions": {
        "session_timeout_s": (int, float),
        "idle_timeout_s": (int, float),
        "apps": (dict,),
    },
    "input": {"max_event_bytes": (int,), "max_future_skew_s": (int, float)},
    "kafka": {
        "bootstrap": (str,),
        "security_protocol": (str,),
        "sasl_mechanism": (str,),
        "sasl_username": (str,),
        "sasl_password": (str,),
        "ssl_cafile": (str,),
        "ssl_certfile": (str,),
        "ssl_keyfile": (str,),
    },
    "topics": {
        "input": (str,),
        "sessions": (str,),
        "enriched": (str,),
        "deadletter": (str,),
        "partitions": (int,),
        "replication": (int,),
    },
    "worker": {
        "app_id": (str,),
        "grace_s": (int, float),
        "tick_s": (int, float),
        "data_dir": (str,),
        "web_port": (int,),
        "web_enabled": (bool,),
        "instance_id": (str,),
        "checkpoint_every": (int,),
        "commit_interval_s": (int, float),
    },
}
_PARTNER_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "format": (str,),
    "topic": (str,),
    "event_types": (list,),
    "sessions": (bool,),
    "attributes_allowlist": (list,),
    "session_timeout_s": (int, float),
}
_PARTNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Short environment names for the settings people set most.
_ENV_ALIASES = {
    "SESSIONIZE_BOOTSTRAP": ("kafka", "bootstrap"),
    "SESSIONIZE_SESSION_TIMEOUT_S": ("sessions", "session_timeout_s"),
    "SESSIONIZE_IDLE_TIMEOUT_S": ("sessions", "idle_timeout_s"),
    "SESSIONIZE_GRACE_S": ("worker", "grace_s"),
    "SESSIONIZE_PARTITIONS": ("topics", "partitions"),
}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the settings from defaults, the TOML file at `path` (if any), then `env`."""
    document = _read_toml(Path(path)) if path is not None else {}
    env = os.environ if env is None else env
    sections = _check_document(document, str(path))
    _apply_env(sections, env)
    return _build(sections)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _check_document(document: dict[str, Any], origin: str) -> dict[str, Any]:
    sections: dict[str, Any] = {name: {} for name in _SECTIONS}
    sections["partners"] = None
    for name, value in document.items():
        if name == "partners":
            if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
                raise ConfigError(f"{origin}: 'partners' must be an array of tables [[partners]]")
            for index, partner in enumerate(value):
                _check_keys(partner, _PARTNER_KEYS, f"{origin}: partners[{index}]")
            sections["partners"] = value
            continue
        if name not in _SECTIONS:
            known = ", ".join([*_SECTIONS, "partners"])
            raise ConfigError(f"{origin}: unknown config section '{name}' (known: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: '{name}' must be a table [{name}]")
        _check_keys(value, _SECTIONS[name], f"{origin}: [{name}]")
        sections[name] = dict(value)
    return sections


def _check_keys(table: dict[str, Any], spec: dict[str, tuple[type, ...]], where: str) -> None:
    for key, value in table.items():
        if key not in spec:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(spec)})")
        if not _has_type(value, spec[key]):
            wanted = " or ".join(t.__name__ for t in spec[key])
            raise ConfigError(f"{where}: '{key}' must be {wanted}, got {value!r}")


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _apply_env(sections: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        target = _ENV_ALIASES.get(name) or _env_target(name.removeprefix(ENV_PREFIX).lower())
        if target is None:
            continue  # other SESSIONIZE_* variables (e.g. SESSIONIZE_CACHE) are not settings
        section, key = target
        types = _SECTIONS[section][key]
        sections[section][key] = _parse_env(name, raw, types)


def _env_target(suffix: str) -> tuple[str, str] | None:
    for section, keys in _SECTIONS.items():
        prefix = section + "_"
        if suffix.startswith(prefix) and suffix.removeprefix(prefix) in keys:
            key = suffix.removeprefix(prefix)
            return (section, key) if keys[key] != (dict,) else None
    return None


def _parse_env(name: str, raw: str, types: tuple[type, ...]) -> Any:
    try:
        if bool in types:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if int in types and float not in types:
            return int(raw)
        if float in types:
            number = float(raw)
            return int(number) if number.is_integer() else number
    except ValueError:
        wanted = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"environment variable {name} must be {wanted}, got {raw!r}") from None
    return raw


def _build(sections: dict[str, Any]) -> Config:
    session_table = dict(sections["sessions"])
    apps = session_table.pop("apps", {})
    app_timeouts: dict[str, float] = {}
    for app_id, table in apps.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[sessions.apps.{app_id}] must be a table")
        _check_keys(table, {"session_timeout_s": (int, float)}, f"[sessions.apps.{app_id}]")
        if "session_timeout_s" in table:
            app_timeouts[app_id] = _timeout(table["session_timeout_s"], f"apps.{app_id}")
    for key in ("session_timeout_s", "idle_timeout_s"):
        if key in session_table:
            session_table[key] = _timeout(session_table[key], key)
    sessions = SessionConfig(**session_table, app_session_timeout_s=app_timeouts)
    limits = Limits(**sections["input"])
    if limits.max_event_bytes <= 0:
        raise ConfigError("[input] max_event_bytes must be positive")
    topics = TopicSettings(**sections["topics"])
    if topics.partitions < 1 or topics.replication < 1:
        raise ConfigError("[topics] partitions and replication must be at least 1")
    raw_partners = sections["partners"]
    partners = default_partners() if raw_partners is None else _partners(raw_partners)
    return Config(
        sessions=sessions,
        limits=limits,
        kafka=KafkaSettings(**sections["kafka"]),
        topics=topics,
        worker=WorkerSettings(**sections["worker"]),
        partners=tuple(partners),
    )


def _timeout(value: float, what: str) -> float:
    if not 1 <= value <= 86_400:
        raise ConfigError(f"{what} must be between 1 and 86400 seconds, got {value}")
    return float(value)


def _partners(tables: list[dict[str, Any]]) -> list[Partner]:
    partners: list[Partner] = []
    names: set[str] = set()
    topics: dict[str, str] = {}
    for index, table in enumerate(tables):
        for required in ("name", "format"):
            if required not in table:
                raise ConfigError(f"partners[{index}] has no '{required}'")
        name, fmt = table["name"], table["format"]
        if not _PARTNER_NAME.fullmatch(name):
            raise ConfigError(
                f"partner name '{name}' must be letters, digits, '.', '_' or '-' (it names a file)"
            )
        if fmt not in FORMATS:
            known = ", ".join(sorted(FORMATS))
            raise ConfigError(f"partner '{name}': unknown format '{fmt}' (known: {known})")
        if name in names:
            raise ConfigError(f"two partners are named '{name}'")
        topic = table.get("topic", f"partner.{name}")
        if topic in topics:
            raise ConfigError(f"partners '{topics[topic]}' and '{name}' both write topic '{topic}'")
        names.add(name)
        topics[topic] = name
        timeout = table.get("session_timeout_s")
        partners.append(
            Partner(
                name=name,
                format=fmt,
                topic=topic,
                event_types=_string_set(table, "event_types", name),
                sessions=table.get("sessions", True),
                attributes_allowlist=_string_set(table, "attributes_allowlist", name),
                session_timeout_s=None if timeout is None else _timeout(timeout, f"{name}"),
            )
        )
    return partners


def _string_set(table: dict[str, Any], key: str, partner: str) -> frozenset[str] | None:
    if key not in table:
        return None
    values = table[key]
    if not all(isinstance(v, str) for v in values):
        raise ConfigError(f"partner '{partner}': '{key}' must be a list of strings")
    return frozenset(values)
