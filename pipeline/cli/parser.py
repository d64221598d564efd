"""The argparse parser of `sessionize`: every error one line, an unknown flag or command named
as such (with the closest known one) before anything else is checked.

argparse alone checks required flags before it reports the ones it does not know, so
`sessionize run --inptu x` said that --input was missing; the flags are read here first.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn

from pipeline.cli.common import EXIT_USAGE

# What argparse itself takes for a negative number rather than a flag (`--seed -3`).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def version() -> str:
    """The installed package's version (the one pip and `pip show sessionize` report)."""
    try:
        return metadata.version("sessionize")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line, not a usage block, and an unknown flag or command
    is reported first, with a "did you mean" when one is close."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", ParagraphFormatter)
        super().__init__(*args, **kwargs)
        self.command_names: tuple[str, ...] = ()  # the top-level parser's subcommands

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        tokens = list(sys.argv[1:] if args is None else args)
        self._refuse_unknown(tokens)
        return super().parse_known_args(tokens, namespace)

    def _refuse_unknown(self, tokens: list[str]) -> None:
        """Stop at the first flag this parser does not know (the top-level parser: at the first
        one before the subcommand, and at an unknown subcommand)."""
        for token in tokens:
            if token == "--":
                return
            if not token.startswith("-") or token == "-" or _NEGATIVE_NUMBER.match(token):
                if self.command_names:  # the subcommand: its parser reads the rest
                    if token not in self.command_names:
                        self.error(
                            f"unknown command {token!r}{_suggestion(token, self.command_names)}"
                        )
                    return
                continue
            flag = token.split("=", 1)[0]
            if not self._knows(flag):
                # argparse's own words for it, which scripts and tests already look for
                suggestion = _suggestion(flag, self._long_flags())
                self.error(f"unrecognized arguments: {flag}{suggestion}")

    def _knows(self, flag: str) -> bool:
        known = self._option_string_actions
        if flag in known:
            return True
        if flag.startswith("--"):  # argparse takes a unique prefix (--inp for --input)
            return self.allow_abbrev and any(name.startswith(flag) for name in self._long_flags())
        return flag[:2] in known  # -ofile: -o with its value attached

    def _long_flags(self) -> list[str]:
        return [name for name in self._option_string_actions if name.startswith("--")]


def _suggestion(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f"; did you mean {close[0]}?" if close else ""


class ParagraphFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description on its own, so a long --help keeps its blank
    lines (argparse's default runs them into one), and never inside a name at a hyphen
    (`<app_id>-events.by-device` stays whole, to copy)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            textwrap.fill(
                " ".join(paragraph.split()),
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
            )
            for paragraph in text.split("\n\n")
        )
