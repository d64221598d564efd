"""The `sessionize` parser: every command's --help, and bad flags as one line, exit 2."""

from __future__ import annotations

import pytest

from tests.unit.cli.helpers import assert_one_line_error, run_cli

# Help


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        (
            ["produce"],
            ["--input", "--devices", "--rate", "--duration", "--seed", "--batch-size", "--topic"],
        ),
        (
            ["consume"],
            [
                "--topic",
                "--partner",
                "--pretty",
                "--from-beginning",
                "--follow",
                "--max",
                "--group",
            ],
        ),
        (["topics"], ["create", "list", "describe"]),
        (["demo"], ["--output-dir", "--duration", "--devices", "--rate", "KAFKA_BOOTSTRAP"]),
    ],
)
def test_help_explains_the_command_and_its_flags(
    capsys: pytest.CaptureFixture[str], command: list[str], flags: list[str]
) -> None:
    code, out, _ = run_cli(capsys, *command, "--help")
    assert code == 0
    for flag in [*flags, "--bootstrap"]:
        assert flag in out
    if command != ["demo"]:
        assert "--config" in out


def test_top_level_help_lists_the_kafka_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for name in ("produce", "consume", "topics", "demo", "worker", "run"):
        assert name in out


@pytest.mark.parametrize(
    "argv",
    [
        ["produce", "--devise", "3"],
        ["consume", "--max", "0"],
        ["consume", "--topic", "a", "--partner", "b"],
        ["produce", "--input", "x.jsonl", "--devices", "3"],
        ["produce", "--devices", "3", "--rate", "fast"],
        ["topics", "delete"],
        ["demo", "--duration", "-1"],
    ],
)
def test_bad_flags(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, "error")
