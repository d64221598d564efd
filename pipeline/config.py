"""Settings: defaults, then the TOML config file, then `SESSIONIZE_*` environment variables.

Every problem (unreadable file, bad TOML, unknown key, wrong type, a number out of its range,
Kafka security settings that cannot work, unknown partner format, two partners on one topic)
raises ConfigError with one line a person can act on, at load. An error names the key and never
shows a secret (`sasl_password`) or an environment variable's value, only what kind it was.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.engine import SessionConfig
from pipeline.input.events import MAX_DEPTH_LIMIT, Limits
from pipeline.partners import FORMATS, Partner, default_partners
from pipeline.vocabulary import MAX_SESSION_TIMEOUT_S, MIN_SESSION_TIMEOUT_S

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


@dataclass(frozen=True, slots=True)
class Setting:
    """What one config key accepts: its types and, for a number, its range (inclusive)."""

    types: tuple[type, ...]
    low: float | None = None
    high: float | None = None
    above_low: bool = False  # low itself is refused (tick_s > 0)
    choices: tuple[str, ...] = ()
    secret: bool = False  # its value never appears in an error

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` ("must be ..."), or None when it can be used."""
        if not _has_type(value, self.types):
            return "must be " + " or ".join(t.__name__ for t in self.types)
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if isinstance(value, int | float) and not self._in_range(value):
            return f"must be {self._range()}"
        return None

    def shown(self, value: Any) -> str:
        """`value` as an error may show it: a secret only by its kind, others cut short."""
        return _kind(value) if self.secret else _short(repr(value))

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.above_low else value < self.low):
            return False
        return self.high is None or value <= self.high

    def _range(self) -> str:
        if self.high is not None:
            return f"between {_number(self.low)} and {_number(self.high)}"
        return f"{'greater than' if self.above_low else 'at least'} {_number(self.low)}"


def _text(*choices: str) -> Setting:
    return Setting((str,), choices=choices)


def _whole(low: int, high: int | None = None) -> Setting:
    return Setting((int,), low, high)


def _seconds(low: float, high: float | None = None, above_low: bool = False) -> Setting:
    return Setting((int, float), low, high, above_low)


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What aiokafka 0.14 accepts (aiokafka/client.py); OAUTHBEARER is refused by _check_sasl.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
# A dead letter keeps at least this much of a bad payload, enough to recognise it.
MIN_DEAD_LETTER_PAYLOAD_BYTES = 1024
_TIMEOUT = _seconds(MIN_SESSION_TIMEOUT_S, MAX_SESSION_TIMEOUT_S)
_SSL_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
_SASL_KEYS = ("sasl_mechanism", "sasl_username", "sasl_password")

# section -> key -> what it accepts; the dataclass defaults are the defaults.
_SECTIONS: dict[str, dict[str, Setting]] = {
    "sessions": {
        "session_timeout_s": _TIMEOUT,
        "idle_timeout_s": _TIMEOUT,
        "dedup_window_s": _seconds(0),
        "dedup_max_ids": _whole(1),
        "apps": Setting((dict,)),
    },
    "input": {
        "max_event_bytes": _whole(1),
        "max_future_skew_s": _seconds(0),
        "max_depth": _whole(1, MAX_DEPTH_LIMIT),
        "max_dead_letter_payload_bytes": _whole(MIN_DEAD_LETTER_PAYLOAD_BYTES),
    },
    "kafka": {
        "bootstrap": _text(),
        "security_protocol": _text(*SECURITY_PROTOCOLS),
        "sasl_mechanism": _text(*SASL_MECHANISMS),
        "sasl_username": _text(),
        "sasl_password": Setting((str,), secret=True),
        "ssl_cafile": _text(),
        "ssl_certfile": _text(),
        "ssl_keyfile": _text(),
    },
    "topics": {
        "input": _text(),
        "sessions": _text(),
        "enriched": _text(),
        "deadletter": _text(),
        "partitions": _whole(1),
        "replication": _whole(1),
    },
    "worker": {
        "app_id": _text(),
        "grace_s": _seconds(0),
        "tick_s": _seconds(0, above_low=True),
        "data_dir": _text(),
        "web_port": _whole(1, 65_535),
        "web_enabled": Setting((bool,)),
        "instance_id": _text(),
        "checkpoint_every": _whole(1),
        "commit_interval_s": _seconds(0, above_low=True),
    },
}
_APP_KEYS: dict[str, Setting] = {"session_timeout_s": _TIMEOUT}
_PARTNER_KEYS: dict[str, Setting] = {
    "name": _text(),
    "format": _text(),
    "topic": _text(),
    "event_types": Setting((list,)),
    "sessions": Setting((bool,)),
    "attributes_allowlist": Setting((list,)),
    "session_timeout_s": _TIMEOUT,
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
_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_KINDS |= {list: "a list", dict: "a table"}
_SHOWN_CHARS = 40


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
            raise ConfigError(
                f"{origin}: unknown config section {_short(repr(name))} (known: {known})"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: '{name}' must be a table [{name}]")
        _check_keys(value, _SECTIONS[name], f"{origin}: [{name}]")
        for app_id, table in value.get("apps", {}).items() if name == "sessions" else ():
            where = f"{origin}: [sessions.apps.{_short(app_id)}]"
            if not isinstance(table, dict):
                raise ConfigError(f"{where} must be a table")
            _check_keys(table, _APP_KEYS, where)
        sections[name] = dict(value)
    return sections


def _check_keys(table: dict[str, Any], spec: dict[str, Setting], where: str) -> None:
    for key, value in table.items():
        if key not in spec:
            raise ConfigError(
                f"{where}: unknown key {_short(repr(key))} (known: {', '.join(spec)})"
            )
        problem = spec[key].problem(value)
        if problem is not None:
            raise ConfigError(f"{where}: '{key}' {problem}, got {spec[key].shown(value)}")


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), f"a {type(value).__name__}")


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _number(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{value:.0f}"


def _apply_env(sections: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        target = _ENV_ALIASES.get(name) or _env_target(name.removeprefix(ENV_PREFIX).lower())
        if target is None:
            continue  # other SESSIONIZE_* variables (e.g. SESSIONIZE_CACHE) are not settings
        section, key = target
        sections[section][key] = _parse_env(name, raw, _SECTIONS[section][key])


def _env_target(suffix: str) -> tuple[str, str] | None:
    for section, keys in _SECTIONS.items():
        prefix = section + "_"
        if suffix.startswith(prefix) and suffix.removeprefix(prefix) in keys:
            key = suffix.removeprefix(prefix)
            return (section, key) if keys[key].types != (dict,) else None
    return None


def _parse_env(name: str, raw: str, setting: Setting) -> Any:
    # An environment value may be a secret set in the wrong variable: errors never show it.
    try:
        value = _env_value(raw, setting.types)
    except ValueError:
        value = None
    problem = setting.problem(value)
    if problem is not None:
        raise ConfigError(f"environment variable {name} {problem} (its value is not shown)")
    return value


def _env_value(raw: str, types: tuple[type, ...]) -> Any:
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
    return raw


def _build(sections: dict[str, Any]) -> Config:
    session_table = dict(sections["sessions"])
    apps = session_table.pop("apps", {})
    app_timeouts = {
        app_id: float(table["session_timeout_s"])
        for app_id, table in apps.items()
        if "session_timeout_s" in table
    }
    for key in ("session_timeout_s", "idle_timeout_s"):
        if key in session_table:
            session_table[key] = float(session_table[key])
    kafka = KafkaSettings(**sections["kafka"])
    _check_sasl(kafka)
    _check_ssl(kafka)
    raw_partners = sections["partners"]
    partners = default_partners() if raw_partners is None else _partners(raw_partners)
    return Config(
        sessions=SessionConfig(**session_table, app_session_timeout_s=app_timeouts),
        limits=Limits(**sections["input"]),
        kafka=kafka,
        topics=TopicSettings(**sections["topics"]),
        worker=WorkerSettings(**sections["worker"]),
        partners=tuple(partners),
    )


def _check_sasl(kafka: KafkaSettings) -> None:
    protocol, mechanism = kafka.security_protocol, kafka.sasl_mechanism
    if not protocol.startswith("SASL_"):
        given = [key for key in _SASL_KEYS if getattr(kafka, key) is not None]
        if given:
            raise ConfigError(
                f"[kafka] {given[0]} is set but security_protocol is {protocol}: "
                "SASL needs SASL_PLAINTEXT or SASL_SSL"
            )
        return
    if mechanism is None:
        known = ", ".join(m for m in SASL_MECHANISMS if m != "OAUTHBEARER")
        raise ConfigError(f"[kafka] security_protocol {protocol} needs sasl_mechanism ({known})")
    if mechanism == "OAUTHBEARER":
        raise ConfigError(
            "[kafka] sasl_mechanism OAUTHBEARER needs a token provider, which sessionize "
            "cannot be given; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
        )
    if mechanism == "GSSAPI":
        if importlib.util.find_spec("gssapi") is None:
            raise ConfigError(
                "[kafka] sasl_mechanism GSSAPI needs the Python package 'gssapi' (not installed)"
            )
        return
    missing = [key for key in ("sasl_username", "sasl_password") if not getattr(kafka, key)]
    if missing:
        raise ConfigError(
            f"[kafka] sasl_mechanism {mechanism} needs {' and '.join(missing)} "
            "(the password can come from SESSIONIZE_KAFKA_SASL_PASSWORD)"
        )


def _check_ssl(kafka: KafkaSettings) -> None:
    given = [key for key in _SSL_FILES if getattr(kafka, key) is not None]
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        if given:
            raise ConfigError(
                f"[kafka] {given[0]} is set but security_protocol is {kafka.security_protocol}: "
                "TLS needs SSL or SASL_SSL"
            )
        return
    if kafka.ssl_keyfile is not None and kafka.ssl_certfile is None:
        raise ConfigError("[kafka] ssl_keyfile is set without ssl_certfile, the certificate")
    for key in given:
        path = getattr(kafka, key)
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"[kafka] {key}: cannot read {path}: {exc.strerror}") from None
    try:
        kafka.client_options()
    except (OSError, ValueError) as exc:
        # OpenSSL's reason ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_OR_CRL_FOUND"), never the
        # files' contents.
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
        raise ConfigError(
            f"[kafka] {', '.join(given) or 'TLS'}: cannot be used for TLS "
            f"({reason or type(exc).__name__})"
        ) from None


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
                f"partner name {_short(repr(name))} must be letters, digits, '.', '_' or '-' "
                "(it names a file)"
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
                session_timeout_s=None if timeout is None else float(timeout),
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
