"""What each config key accepts: derived from the settings dataclasses, spelled out in the
shipped config file."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config import Config, load_config
from pipeline.config.keys import TABLE, at_least, section_keys
from pipeline.config.settings import FALLBACK_INSTANCE_ID, SECTIONS
from pipeline.kafka.clients import transactional_producer

SHIPPED = Path(__file__).resolve().parents[3] / "config" / "sessionize.toml"


@dataclass(frozen=True)
class Knobs:
    name: str = "x"
    retries: int = 3
    ratio: float = 0.5
    enabled: bool = False


def test_keys_are_the_fields_typed_by_them_with_their_declared_ranges() -> None:
    keys = section_keys(Knobs, {"retries": at_least(1), "ratio": at_least(0)})
    assert list(keys) == ["name", "retries", "ratio", "enabled"]
    assert [keys[name].types for name in keys] == [(str,), (int,), (int, float), (bool,)]
    assert keys["retries"].problem(0) == "must be at least 1"
    assert section_keys(Knobs, {"ratio": at_least(0)}, not_keys=("retries",)).keys() == {
        "name",
        "ratio",
        "enabled",
    }


def test_a_number_without_a_declared_range_is_a_mistake() -> None:
    with pytest.raises(TypeError, match=r"Knobs\.ratio: a number needs a declared range"):
        section_keys(Knobs, {"retries": at_least(1)})


def test_a_declaration_of_no_field_is_a_mistake() -> None:
    with pytest.raises(TypeError, match="no config fields \\['retry'\\]"):
        section_keys(Knobs, {"retries": at_least(1), "ratio": at_least(0), "retry": at_least(1)})


@pytest.mark.parametrize(
    ("section", "key"),
    [(section, key) for section, keys in SECTIONS.items() for key in keys],
)
def test_the_shipped_config_names_every_key(section: str, key: str) -> None:
    text = SHIPPED.read_text()
    part = text.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
    if SECTIONS[section][key] is TABLE:
        assert f"[{section}.{key}." in part
    else:
        assert re.search(rf"^(# )?{key} = ", part, re.MULTILINE), f"[{section}] {key}"


# [worker] instance_id: the host name unless set, so one config serves every host


async def _transactional_id(config: Config) -> str | None:
    producer = transactional_producer(config)  # built, never started: no broker needed
    return producer._txn_manager.transactional_id if producer._txn_manager else None


def test_workers_on_two_hosts_with_one_config_get_their_own_transactional_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = []
    for host in ("sessionize-0", "sessionize-1"):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        config = load_config(SHIPPED, env={})
        assert config.worker.instance_id == host
        ids.append(asyncio.run(_transactional_id(config)))
    assert ids == ["sessionize-sessionize-0", "sessionize-sessionize-1"]


def test_a_configured_instance_id_wins_over_the_host_name(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[worker]\ninstance_id = "blue"\n')
    assert load_config(path, env={}).worker.instance_id == "blue"
    env = {"SESSIONIZE_WORKER_INSTANCE_ID": "green"}
    assert load_config(path, env=env).worker.instance_id == "green"


def test_a_host_without_a_name_still_gets_an_instance_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert load_config(None, env={}).worker.instance_id == FALLBACK_INSTANCE_ID
