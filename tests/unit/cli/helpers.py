"""Running `sessionize` in tests: in this process (with its output captured) or in a process
of its own, and the one-line error every failure must be."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    """(exit code, stdout, stderr lines) of `sessionize ARGV`."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse: --help and bad flags
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def assert_one_line_error(err: list[str], *needles: str) -> None:
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0]


def sessionize(*argv: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of `python -m pipeline ARGV` in a process of its own: logging
    as a user gets it (under pytest, the log capture would hide aiokafka's own lines)."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    return done.returncode, done.stderr.splitlines()
