"""What the local broker needs around it: java and Maven on PATH, the Maven project and log
config shipped in pipeline/kafka/broker/, and the broker's jars, fetched by Maven once into a
cache outside git; and LocalKafkaError, for every way that can fail."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

# The newest Kafka release on Maven Central; pom.xml's default names it too.
KAFKA_VERSION = "4.4.0"

BROKER_FILES = Path(__file__).resolve().parent.parent / "broker"  # shipped with the package
POM = BROKER_FILES / "pom.xml"
LOG_CONFIG = BROKER_FILES / "log4j2.properties"
_FETCHED_MARKER = ".fetched"
_LOG_TAIL_LINES = 25


class LocalKafkaError(Exception):
    """A local broker could not be fetched, started, found or stopped.

    ``summary`` is one readable line; ``str()`` adds the details (e.g. the broker's log tail).
    """

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(f"{summary}\n{details}" if details else summary)
        self.summary = summary


def cache_root() -> Path:
    """Where fetched jars live: ``$SESSIONIZE_CACHE``, else ``~/.cache/sessionize``."""
    configured = os.environ.get("SESSIONIZE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sessionize"


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """Return the directory of the broker's jars, fetching them with Maven the first time.

    The marker file is written only after a complete copy, so an interrupted fetch is redone.
    """
    home = cache_root() / f"kafka-{version}"
    libs = home / "libs"
    if (home / _FETCHED_MARKER).exists():
        return libs
    mvn = require_tool("mvn", "Maven is needed to fetch the Kafka jars (apt-get install maven)")
    home.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(home / ".lock"):
        if (home / _FETCHED_MARKER).exists():  # another process fetched while we waited
            return libs
        partial = home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LocalKafkaError(
                f"mvn could not fetch kafka_2.13:{version} (exit {result.returncode})",
                last_lines(result.stdout + result.stderr),
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        (home / _FETCHED_MARKER).write_text(f"{version}\n")
    return libs


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the block."""
    with path.open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def require_tool(name: str, why: str) -> str:
    """The path of the program `name`; LocalKafkaError saying `why` it is needed if absent."""
    found = shutil.which(name)
    if found is None:
        raise LocalKafkaError(f"`{name}` not found on PATH: {why}")
    return found


def last_lines(text: str) -> str:
    """The last lines of a log or of a tool's output, for an error's details."""
    return "\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:])
