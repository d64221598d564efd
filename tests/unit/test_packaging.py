"""The wheel ships every package and every file the package reads at run time."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_of_the_tree_is_listed_for_the_wheel() -> None:
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "pipeline").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    listed = {name for name in _setuptools()["packages"] if not name.startswith("pipeline.schema")}
    assert listed == on_disk


def test_the_local_brokers_maven_files_ship_with_the_package() -> None:
    data = _setuptools()["package-data"]["pipeline.kafka"]
    for pattern in data:
        assert list((REPO / "pipeline" / "kafka").glob(pattern)), pattern
    assert {"broker/pom.xml", "broker/log4j2.properties"} <= set(data)
