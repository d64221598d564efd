"""Config documents for the tests: write one, and the one-line error of loading it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

SECRET = "the-secret"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def config_error(text: str, env: dict[str, str] | None = None, tmp_path: Path | None = None) -> str:
    """The one-line ConfigError of loading `text` (a TOML document) with `env`."""
    path = write(tmp_path, text) if tmp_path is not None else None
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    message = str(caught.value)
    assert "\n" not in message
    return message
