"""`sessionize consume` without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config import Config
from tests.unit.cli.helpers import assert_one_line_error, run_cli


def test_unknown_partner_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "consume", "--partner", "segment", "--bootstrap", "x:1")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "unknown partner 'segment'", "amplitude", "braze", "mixpanel")


# Where it starts: the oldest message, as kcat does; what it waits for, said before it waits


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The options each `consume` hands the topic reader (which reads nothing here)."""
    from pipeline.kafka import reader

    seen: list[dict[str, Any]] = []

    async def read_nothing(
        config: Config, topics: list[str], on_record: Any, **options: Any
    ) -> int:
        seen.append({"topics": topics, **options})
        return 0

    monkeypatch.setattr(reader, "read_topics", read_nothing)
    return seen


def test_with_no_flags_it_reads_from_the_beginning_and_stops_at_the_end(
    capsys: pytest.CaptureFixture[str], reads: list[dict[str, Any]]
) -> None:
    code, out, err = run_cli(capsys, "consume")
    assert (code, out) == (0, "")
    assert [(r["topics"], r["from_beginning"], r["follow"]) for r in reads] == [
        (["sessions"], True, False)
    ]
    assert err == ["read 0 messages from sessions"]


def test_from_end_reads_only_newer_messages_and_says_so_when_there_were_none(
    capsys: pytest.CaptureFixture[str], reads: list[dict[str, Any]]
) -> None:
    code, _, err = run_cli(capsys, "consume", "--from-end", "--topic", "t")
    assert code == 0
    assert [r["from_beginning"] for r in reads] == [False]
    assert_one_line_error(err, "read 0 messages from t", "--from-end", "--follow")


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ([], "reading sessions from the oldest message, then waiting for new messages"),
        (["--from-end"], "reading sessions from the end (new messages only), then waiting"),
        (["--group", "g"], "from group g's committed offsets (where it has none: the oldest"),
    ],
)
def test_follow_says_what_it_waits_for_before_it_waits(
    capsys: pytest.CaptureFixture[str],
    reads: list[dict[str, Any]],
    flags: list[str],
    said: str,
) -> None:
    code, _, err = run_cli(capsys, "consume", "--follow", *flags)
    assert code == 0
    assert [r["follow"] for r in reads] == [True]
    assert len(err) == 2  # what it reads, before; how many it read, after
    assert err[0].startswith("sessionize consume: reading sessions ")
    assert said in err[0] and "Ctrl-C" in err[0]


def test_from_beginning_and_from_end_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "consume", "--from-beginning", "--from-end")
    assert code == 2
    assert_one_line_error(err, "not allowed with argument")
