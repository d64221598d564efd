"""Loading settings: the shipped config file, environment overrides, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Config, ConfigError, load_config
from pipeline.input import MAX_DEPTH_LIMIT
from tests.unit.config.documents import SECRET, config_error, write

REPO = Path(__file__).resolve().parents[3]


def test_shipped_config_spells_out_the_defaults() -> None:
    shipped = load_config(REPO / "config" / "sessionize.toml", env={})
    defaults = Config()
    assert sorted(shipped.partners, key=lambda p: p.name) == sorted(
        defaults.partners, key=lambda p: p.name
    )
    assert (shipped.sessions, shipped.limits, shipped.kafka, shipped.topics, shipped.worker) == (
        defaults.sessions,
        defaults.limits,
        defaults.kafka,
        defaults.topics,
        defaults.worker,
    )
    assert {p.format for p in shipped.partners} == {
        "canonical",
        "amplitude",
        "ga4",
        "mixpanel",
        "braze",
    }


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka]\nbootstrap = "file:9092"\n[sessions]\nsession_timeout_s = 30\n')
    env = {
        "SESSIONIZE_BOOTSTRAP": "env:9092",
        "SESSIONIZE_TOPICS_PARTITIONS": "8",
        "SESSIONIZE_IDLE_TIMEOUT_S": "600",
        "SESSIONIZE_WORKER_WEB_ENABLED": "false",
        "SESSIONIZE_CACHE": "/not/a/setting",
    }
    config = load_config(path, env=env)
    assert config.kafka.bootstrap == "env:9092"
    assert config.topics.partitions == 8
    assert config.sessions.session_timeout_s == 30
    assert config.sessions.idle_timeout_s == 600


def test_per_app_timeout(tmp_path: Path) -> None:
    path = write(tmp_path, '[sessions.apps."app-x"]\nsession_timeout_s = 10\n')
    config = load_config(path, env={})
    assert config.sessions.timeout_ms("app-x") == 10_000
    assert config.sessions.timeout_ms("other") == 60_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sessions]\nsesion_timeout_s = 5\n", "unknown key 'sesion_timeout_s'"),
        ("[sesions]\n", "unknown config section 'sesions'"),
        ("[sessions]\nsession_timeout_s = 'x'\n", "'session_timeout_s' must be int or float"),
        ("[sessions]\nsession_timeout_s = 0\n", "between 1 and 86400"),
        ("[topics]\npartitions = 0\n", "at least 1"),
        ("not toml = = =\n", "not valid TOML"),
        ('[[partners]]\nname = "x"\nformat = "segment"\n', "unknown format 'segment'"),
        (
            '[[partners]]\nname = "a"\nformat = "ga4"\ntopic = "t"\n'
            '[[partners]]\nname = "b"\nformat = "braze"\ntopic = "t"\n',
            "both write topic 't'",
        ),
        ('[[partners]]\nname = "a/b"\nformat = "ga4"\n', "must be letters"),
    ],
)
def test_bad_config_is_one_readable_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_bad_environment_value() -> None:
    with pytest.raises(ConfigError, match="SESSIONIZE_TOPICS_PARTITIONS must be int"):
        load_config(None, env={"SESSIONIZE_TOPICS_PARTITIONS": "many"})


# Secrets: named, never shown


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (f'["{SECRET}"]', "a list"),
        (f'{{ value = "{SECRET}" }}', "a table"),
        ("31337", "an integer"),
    ],
)
def test_a_wrongly_typed_password_is_named_not_shown(tmp_path: Path, value: str, kind: str) -> None:
    message = config_error(f"[kafka]\nsasl_password = {value}\n", tmp_path=tmp_path)
    assert f"'sasl_password' must be str, got {kind}" in message
    assert SECRET not in message
    assert "31337" not in message


@pytest.mark.parametrize(
    "variable",
    [
        "SESSIONIZE_TOPICS_PARTITIONS",
        "SESSIONIZE_WORKER_GRACE_S",
        "SESSIONIZE_WORKER_WEB_ENABLED",
        "SESSIONIZE_KAFKA_SECURITY_PROTOCOL",
        "SESSIONIZE_KAFKA_SASL_MECHANISM",
    ],
)
def test_a_bad_environment_value_is_never_shown(variable: str) -> None:
    message = config_error("", env={variable: SECRET})
    assert f"environment variable {variable} must be" in message
    assert SECRET not in message


def test_an_out_of_range_environment_value_is_not_shown() -> None:
    message = config_error("", env={"SESSIONIZE_GRACE_S": "-31337"})
    assert "SESSIONIZE_GRACE_S must be at least 0" in message
    assert "31337" not in message


def test_long_values_are_cut_short(tmp_path: Path) -> None:
    message = config_error(f'[topics]\ninput = ["{"x" * 500}"]\n', tmp_path=tmp_path)
    assert "'input' must be str" in message
    assert len(message) < 200


# Numbers in their ranges


@pytest.mark.parametrize(
    ("section", "key", "value", "needle"),
    [
        ("sessions", "session_timeout_s", "0", "between 1 and 86400"),
        ("sessions", "idle_timeout_s", "86401", "between 1 and 86400"),
        ("sessions", "dedup_window_s", "-1", "at least 0"),
        ("sessions", "dedup_max_ids", "0", "at least 1"),
        ("input", "max_event_bytes", "0", "at least 1"),
        ("input", "max_future_skew_s", "-1", "at least 0"),
        ("input", "max_depth", "0", f"between 1 and {MAX_DEPTH_LIMIT}"),
        ("input", "max_depth", str(MAX_DEPTH_LIMIT + 1), f"between 1 and {MAX_DEPTH_LIMIT}"),
        ("input", "max_dead_letter_payload_bytes", "1023", "at least 1024"),
        ("topics", "partitions", "0", "at least 1"),
        ("topics", "replication", "0", "at least 1"),
        ("worker", "grace_s", "-5", "at least 0"),
        ("worker", "tick_s", "0", "greater than 0"),
        ("worker", "checkpoint_every", "0", "at least 1"),
        ("worker", "commit_interval_s", "0", "greater than 0"),
        ("worker", "web_port", "-1", "between 0 and 65535"),
        ("worker", "web_port", "65536", "between 0 and 65535"),
        ("worker", "progress_interval_s", "0", "greater than 0"),
        ("worker", "grace_s", "nan", "a finite number"),
        ("worker", "tick_s", "inf", "a finite number"),
    ],
)
def test_numbers_out_of_range_are_refused_at_load(
    tmp_path: Path, section: str, key: str, value: str, needle: str
) -> None:
    message = config_error(f"[{section}]\n{key} = {value}\n", tmp_path=tmp_path)
    assert f"[{section}]: '{key}' must be {needle}, got {value}" in message
    variable = f"SESSIONIZE_{section}_{key}".upper()
    assert f"{variable} must be {needle}" in config_error("", env={variable: value})


@pytest.mark.parametrize(
    "text",
    [
        '[sessions.apps."a"]\nsession_timeout_s = 0\n',
        '[[partners]]\nname = "p"\nformat = "ga4"\nsession_timeout_s = 90000\n',
    ],
)
def test_app_and_partner_timeouts_in_range(tmp_path: Path, text: str) -> None:
    assert "'session_timeout_s' must be between 1 and 86400" in config_error(
        text, tmp_path=tmp_path
    )


def test_range_limits_themselves_are_accepted(tmp_path: Path) -> None:
    text = (
        "[sessions]\nsession_timeout_s = 1\nidle_timeout_s = 86400\ndedup_window_s = 0\n"
        "dedup_max_ids = 1\n"
        f"[input]\nmax_future_skew_s = 0\nmax_depth = {MAX_DEPTH_LIMIT}\n"
        "max_dead_letter_payload_bytes = 1024\nmax_event_bytes = 1\n"
        "[worker]\ngrace_s = 0\ntick_s = 0.01\nweb_port = 65535\ncheckpoint_every = 1\n"
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.worker.grace_s == 0
    assert config.limits.max_depth == MAX_DEPTH_LIMIT


def test_new_limits_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[sessions]\ndedup_window_s = 60\ndedup_max_ids = 50\n"
        "[input]\nmax_depth = 8\nmax_dead_letter_payload_bytes = 4096\n",
    )
    config = load_config(path, env={})
    assert (config.sessions.dedup_window_s, config.sessions.dedup_max_ids) == (60, 50)
    assert (config.limits.max_depth, config.limits.max_dead_letter_payload_bytes) == (8, 4096)
    env = {"SESSIONIZE_SESSIONS_DEDUP_MAX_IDS": "7", "SESSIONIZE_INPUT_MAX_DEPTH": "3"}
    config = load_config(path, env=env)
    assert (config.sessions.dedup_max_ids, config.limits.max_depth) == (7, 3)
