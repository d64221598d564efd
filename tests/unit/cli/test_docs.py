"""What a user reads beside the command: the README's links lead to files of this repository
(not to a spec only the team has), and docs/contract.md states the defaults the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline import vocabulary
from pipeline.engine import SessionConfig
from pipeline.input import Limits

REPO = Path(__file__).resolve().parents[3]
CONTRACT = REPO / "docs" / "contract.md"
_LINK = re.compile(r"\]\(([^)#\s]+)[^)]*\)")


@pytest.mark.parametrize("page", ["README.md", "docs/contract.md"])
def test_every_relative_link_leads_to_a_file_of_the_repository(page: str) -> None:
    targets = [t for t in _LINK.findall((REPO / page).read_text()) if "://" not in t]
    for target in targets:
        path = ((REPO / page).parent / target).resolve()
        assert path.is_relative_to(REPO), f"{page} links outside the repository: {target}"
        assert path.exists(), f"{page} links to a missing file: {target}"


def test_the_readme_links_the_contract() -> None:
    assert "](docs/contract.md)" in (REPO / "README.md").read_text()


def _number(value: float) -> str:
    return f"{value:g}"


def test_the_contract_states_the_defaults_of_the_code() -> None:
    text = " ".join(CONTRACT.read_text().split())
    sessions, limits = SessionConfig(), Limits()
    for key, value in [
        ("session_timeout_s", sessions.session_timeout_s),
        ("idle_timeout_s", sessions.idle_timeout_s),
        ("dedup_window_s", sessions.dedup_window_s),
        ("dedup_max_ids", sessions.dedup_max_ids),
        ("max_depth", limits.max_depth),
        ("max_future_skew_s", limits.max_future_skew_s),
        ("max_dead_letter_payload_bytes", limits.max_dead_letter_payload_bytes),
    ]:
        said = rf"`{key}`[^()`]{{0,30}}\(default {re.escape(_number(value))}[;)]"
        assert re.search(said, text), key
    assert limits.max_event_bytes == 1 << 20 and "`max_event_bytes` (default 1 MiB)" in text
    low, high = vocabulary.MIN_SESSION_TIMEOUT_S, vocabulary.MAX_SESSION_TIMEOUT_S
    assert f"number from {low} to {high}" in text
    assert vocabulary.MIN_TS_MS == 946_684_800_000 and "before 2000-01-01" in text


def test_the_contract_names_every_event_type_reason_and_end_reason() -> None:
    text = CONTRACT.read_text()
    words = [
        vocabulary.APP_LAUNCH,
        vocabulary.APP_FOREGROUND,
        vocabulary.APP_BACKGROUND,
        vocabulary.APP_TERMINATE,
        vocabulary.SESSION_ATTRIBUTE,
        vocabulary.SCREEN_VIEW,
        vocabulary.CUSTOM_EVENT,
        vocabulary.COMMERCE_EVENT,
        vocabulary.MALFORMED_JSON,
        vocabulary.INVALID_EVENT,
        vocabulary.TIMESTAMP_OUT_OF_RANGE,
        vocabulary.TOO_LARGE,
        vocabulary.ATTRIBUTE_NOT_NUMERIC,
        vocabulary.END_TIMEOUT,
        vocabulary.END_IDLE,
        vocabulary.END_TERMINATE,
        vocabulary.END_FORCE_QUIT,
    ]
    for word in words:
        assert f"`{word}`" in text, word
