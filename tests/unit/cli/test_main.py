"""The `sessionize` parser: --version, every command's --help, and bad flags as one line, exit 2
(an unknown flag named first, with the closest known one)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from pipeline.cli.main import COMMANDS
from tests.unit.cli.helpers import assert_one_line_error, run_cli, sessionize

REPO = Path(__file__).resolve().parents[3]


def test_version_is_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    code, out, err = run_cli(capsys, "--version")
    assert (code, out, err) == (0, f"sessionize {project['version']}\n", [])


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
        (["demo"], ["--output-dir", "--duration", "--devices", "--rate", "SESSIONIZE_BOOTSTRAP"]),
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


# Unknown flags and commands: named first, before a required flag is found missing


def test_a_mistyped_flag_is_reported_as_unknown_not_the_required_one_as_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "run", "--inptu", "x", "--output-dir", "out")
    assert (code, out) == (2, "")
    assert_one_line_error(
        err, "sessionize run: error: unrecognized arguments: --inptu; did you mean --input?"
    )
    assert "required" not in err[0]


def _long_flags(command: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    _, out, _ = run_cli(capsys, command, "--help")
    return sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", out)) - {"--help"})


@pytest.mark.parametrize("command", [command.name for command in COMMANDS])
def test_every_command_names_a_mistyped_flag_and_the_one_meant(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    flags = _long_flags(command, capsys)
    assert flags, command
    for flag in flags:
        typo = flag[:-2] + flag[-1] + flag[-2]  # the last two letters swapped
        if any(other.startswith(typo) for other in flags):
            continue  # still a prefix of a real flag: argparse takes it for that one
        code, out, err = run_cli(capsys, command, typo, "1")
        assert (code, out) == (2, ""), (command, typo)
        assert_one_line_error(err, f"unrecognized arguments: {typo}; did you mean {flag}?")


def test_a_flag_like_no_other_gets_no_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "consume", "--qqqqqqqq=3")
    assert code == 2
    assert_one_line_error(err, "unrecognized arguments: --qqqqqqqq (see sessionize consume")


def test_a_mistyped_command_gets_the_one_meant(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "wroker", "--config", "x.toml")
    assert code == 2
    assert_one_line_error(err, "unknown command 'wroker'; did you mean worker?")


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--devices", "2", "--seed", "-3", "-o", "-"],  # a negative value
        ["generate", "--dev", "2", "-o-"],  # a unique prefix; a short flag with its value
        ["generate", "--devices=2", "--output", "-"],
    ],
)
def test_flags_argparse_accepts_are_not_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert out.count("\n") > 0


def test_the_console_script_refuses_a_mistyped_flag_in_one_line() -> None:
    code, err = sessionize("worker", "--confg", "c.toml")
    assert code == 2
    assert_one_line_error(err, "unrecognized arguments: --confg; did you mean --config?")
