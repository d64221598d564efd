"""What each config key accepts: derived from the settings dataclasses, spelled out in the
shipped config file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config.keys import TABLE, at_least, section_keys
from pipeline.config.settings import SECTIONS

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
