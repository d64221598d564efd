"""Settings: the shipped config file, environment overrides, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


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


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka]\nsasl_mechanism = "PLAIN"\nsasl_password = "hunter2"\n')
    assert "hunter2" not in repr(load_config(path, env={}))


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
