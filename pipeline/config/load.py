"""Loading the settings: defaults, then the TOML config file, then `SESSIONIZE_*` environment
variables (`SESSIONIZE_<SECTION>_<KEY>`, and short names for the common ones).

Every problem (unreadable file, bad TOML, unknown key, wrong type, a number out of its range,
Kafka security settings that cannot work, unknown partner format, two partners on one topic)
raises ConfigError with one line a person can act on, at load. An error names the key and never
shows a secret (`sasl_password`) or an environment variable's value, only what kind it was.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config.keys import TABLE, ConfigError, Setting, cut_short
from pipeline.config.partners import configured_partners
from pipeline.config.security import check_security
from pipeline.config.settings import (
    APP_KEYS,
    PARTNER_KEYS,
    SECTIONS,
    Config,
    KafkaSettings,
    TopicSettings,
    WorkerSettings,
)
from pipeline.engine import SessionConfig
from pipeline.input import Limits
from pipeline.partners import default_partners

ENV_PREFIX = "SESSIONIZE_"
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
    sections: dict[str, Any] = {name: {} for name in SECTIONS}
    sections["partners"] = None
    for name, value in document.items():
        if name == "partners":
            if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
                raise ConfigError(f"{origin}: 'partners' must be an array of tables [[partners]]")
            for index, partner in enumerate(value):
                _check_keys(partner, PARTNER_KEYS, f"{origin}: partners[{index}]")
            sections["partners"] = value
            continue
        if name not in SECTIONS:
            known = ", ".join([*SECTIONS, "partners"])
            raise ConfigError(
                f"{origin}: unknown config section {cut_short(repr(name))} (known: {known})"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: '{name}' must be a table [{name}]")
        _check_keys(value, SECTIONS[name], f"{origin}: [{name}]")
        for app_id, table in value.get("apps", {}).items() if name == "sessions" else ():
            where = f"{origin}: [sessions.apps.{cut_short(app_id)}]"
            if not isinstance(table, dict):
                raise ConfigError(f"{where} must be a table")
            _check_keys(table, APP_KEYS, where)
        sections[name] = dict(value)
    return sections


def _check_keys(table: dict[str, Any], spec: dict[str, Setting], where: str) -> None:
    for key, value in table.items():
        if key not in spec:
            raise ConfigError(
                f"{where}: unknown key {cut_short(repr(key))} (known: {', '.join(spec)})"
            )
        problem = spec[key].problem(value)
        if problem is not None:
            raise ConfigError(f"{where}: '{key}' {problem}, got {spec[key].shown(value)}")


def _apply_env(sections: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        target = _ENV_ALIASES.get(name) or _env_target(name.removeprefix(ENV_PREFIX).lower())
        if target is None:
            continue  # other SESSIONIZE_* variables (e.g. SESSIONIZE_CACHE) are not settings
        section, key = target
        sections[section][key] = _parse_env(name, raw, SECTIONS[section][key])


def _env_target(suffix: str) -> tuple[str, str] | None:
    for section, keys in SECTIONS.items():
        prefix = section + "_"
        if suffix.startswith(prefix) and suffix.removeprefix(prefix) in keys:
            key = suffix.removeprefix(prefix)
            return (section, key) if keys[key] is not TABLE else None  # apps: tables only
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
    check_security(kafka)
    raw_partners = sections["partners"]
    partners = default_partners() if raw_partners is None else configured_partners(raw_partners)
    return Config(
        sessions=SessionConfig(**session_table, app_session_timeout_s=app_timeouts),
        limits=Limits(**sections["input"]),
        kafka=kafka,
        topics=TopicSettings(**sections["topics"]),
        worker=WorkerSettings(**sections["worker"]),
        partners=tuple(partners),
    )
