"""`sessionize demo`: run the whole pipeline on a real broker and show what it made."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from pipeline.cli.common import (
    EXIT_KAFKA,
    CliError,
    Command,
    add_timeout_flag,
    create_output_dir,
    positive_float,
    positive_int,
)
from pipeline.tools.demo import (
    GRACE_S,
    IDLE_TIMEOUT_S,
    SESSION_TIMEOUT_S,
    DemoError,
    DemoOptions,
    run_demo,
)


def _demo_flags(parser: argparse.ArgumentParser) -> None:
    defaults = DemoOptions()
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=defaults.output_dir,
        metavar="DIR",
        help=f"for the config, logs, outputs, summary and picture (default {defaults.output_dir})",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=defaults.duration_s,
        metavar="S",
        help=f"seconds of live traffic (default {defaults.duration_s:g})",
    )
    parser.add_argument(
        "--devices",
        type=positive_int,
        default=defaults.devices,
        metavar="N",
        help=f"simulated devices (default {defaults.devices})",
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=defaults.rate,
        metavar="EVENTS_PER_S",
        help=f"about this many events per second (default {defaults.rate:g})",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})"
    )
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="use this Kafka instead of starting a local broker (env: SESSIONIZE_BOOTSTRAP)",
    )
    add_timeout_flag(parser)


# The demo's old variable, still read (with a warning) so that `KAFKA_BOOTSTRAP=... make demo`
# does not quietly start a broker of its own instead.
DEPRECATED_ENV = "KAFKA_BOOTSTRAP"


def demo_bootstrap(flag: str | None, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The broker the demo uses (None: start one) and a warning to print, if any: --bootstrap,
    else SESSIONIZE_BOOTSTRAP as for every other command, else the deprecated KAFKA_BOOTSTRAP."""
    old = env.get(DEPRECATED_ENV) or None
    bootstrap = flag or env.get("SESSIONIZE_BOOTSTRAP") or None
    if old is None or flag:
        return bootstrap, None
    if bootstrap is not None:
        return bootstrap, f"{DEPRECATED_ENV} is deprecated and ignored: SESSIONIZE_BOOTSTRAP is set"
    return old, f"{DEPRECATED_ENV} is deprecated: set SESSIONIZE_BOOTSTRAP instead"


def _demo(args: argparse.Namespace) -> int:
    bootstrap, warning = demo_bootstrap(args.bootstrap, os.environ)
    if warning is not None:
        print(f"sessionize demo: warning: {warning}", file=sys.stderr)
    options = DemoOptions(
        output_dir=create_output_dir(args.output_dir.resolve()),
        duration_s=args.duration,
        devices=args.devices,
        rate=args.rate,
        seed=args.seed,
        bootstrap=bootstrap,
        timeout_s=args.timeout,
    )
    try:
        print(run_demo(options))
    except DemoError as exc:
        raise CliError(str(exc), EXIT_KAFKA) from None
    return 0


DEMO = Command(
    name="demo",
    summary="run the whole pipeline on a real broker and show what it made",
    description="Start a local Kafka broker (or use --bootstrap / SESSIONIZE_BOOTSTRAP), create "
    f"the topics, start a worker with short timeouts (session_timeout_s {SESSION_TIMEOUT_S}, "
    f"idle_timeout_s {IDLE_TIMEOUT_S}, grace {GRACE_S} s; the config is written to "
    "DIR/demo.toml; other SESSIONIZE_* settings do not apply), send "
    "live generated traffic for --duration seconds, wait for the last sessions to close, read "
    "every output topic, and print a summary (also DIR/summary.txt). Draws DIR/timeline.html: "
    "the sessions and lifecycle events of a few devices. Stops the worker and the broker it "
    "started, also on Ctrl-C or error.",
    add_flags=_demo_flags,
    run=_demo,
)
