"""A real single-node Apache Kafka broker on 127.0.0.1, for the kafka tests and local runs.

The broker is the plain JVM distribution: its jars come from Maven Central through
``kafka/pom.xml`` into a cache outside git, and ``java -cp 'libs/*' kafka.Kafka`` runs one KRaft
node that is both broker and controller. No Docker, no downloads besides Maven's.

Used by ``tests/conftest.py`` (the ``kafka_bootstrap`` fixture calls :func:`start`) and by the
command line, for ``make kafka-up`` / ``make kafka-down``::

    python -m pipeline.kafka.local up [--data-dir .kafka]   # prints 127.0.0.1:PORT
    python -m pipeline.kafka.local address [--data-dir .kafka]
    python -m pipeline.kafka.local down [--data-dir .kafka]

Files in the data directory: ``server.properties``, ``kraft/`` (the topic data, wiped by every
:func:`start`), ``broker.log`` (log4j, warnings only), ``broker.out`` (the JVM's own output) and
``broker.json`` (pid and bootstrap address of the running broker).

Version: KAFKA_VERSION is the newest release on Maven Central (4.4.0): it works with the clients
we pin. 4.4.0, 4.1.2, 4.0.2 and 3.9.2 all passed the same checks with aiokafka 0.14.0 (admin
create_topics with 3 partitions, ``send_and_wait`` uncompressed and gzip, a consumer group
commit, a transaction read back read_committed) and faust-streaming 0.15.3 (an in-process
``faust.App``, ``web_enabled=False``, with an agent and a Table whose changelog was read back,
at_least_once and exactly_once); 4.4.0 and 3.9.2 also passed a ``faust.Worker`` run restarted on
the same app id. Kafka 4.0 removed the oldest protocol versions (KIP-896), but aiokafka
negotiates newer ones and Faust talks through aiokafka. 3.9.2 starts with these same settings,
so it is the fallback should a later 4.x change bite.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.protocol.metadata import MetadataRequest_v5, MetadataResponse_v5

KAFKA_VERSION = "4.4.0"

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
JVM_OPTIONS = ("-Xmx768m", "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
DEFAULT_DATA_DIR = Path(".kafka")

_KAFKA_TOOLING = Path(__file__).resolve().parent / "broker"  # shipped with the package
_POM = _KAFKA_TOOLING / "pom.xml"
_LOG_CONFIG = _KAFKA_TOOLING / "log4j2.properties"
_FETCHED_MARKER = ".fetched"
_STATE_FILE = "broker.json"
_LOG_TAIL_LINES = 25
_PORT_ATTEMPTS = 3


class LocalKafkaError(Exception):
    """A local broker could not be fetched, started, found or stopped.

    ``summary`` is one readable line; ``str()`` adds the details (e.g. the broker's log tail).
    """

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(f"{summary}\n{details}" if details else summary)
        self.summary = summary


@dataclass
class Broker:
    """A broker process started by :func:`start` (or found again by :func:`running`)."""

    bootstrap: str
    pid: int
    data_dir: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def is_alive(self) -> bool:
        """Whether the broker's JVM still runs (a zombie counts as gone)."""
        if self._process is not None:
            return self._process.poll() is None
        return _is_broker_process(self.pid, self.data_dir)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the broker's process group, wait, SIGKILL after ``grace_s``; forget its pid."""
        if self.is_alive():
            self._signal_group(signal.SIGTERM)
            if not self._wait_gone(grace_s):
                self._signal_group(signal.SIGKILL)
                self._wait_gone(5.0)
        (self.data_dir / _STATE_FILE).unlink(missing_ok=True)

    def _signal_group(self, signum: signal.Signals) -> None:
        # start() gives the JVM its own session, so its process group id is its pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def _wait_gone(self, timeout_s: float) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout_s
        while self.is_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


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
    mvn = _require_tool("mvn", "Maven is needed to fetch the Kafka jars (apt-get install maven)")
    home.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(home / ".lock"):
        if (home / _FETCHED_MARKER).exists():  # another process fetched while we waited
            return libs
        partial = home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(_POM),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LocalKafkaError(
                f"mvn could not fetch kafka_2.13:{version} (exit {result.returncode})",
                _last_lines(result.stdout + result.stderr),
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        (home / _FETCHED_MARKER).write_text(f"{version}\n")
    return libs


def start(
    data_dir: Path, *, version: str = KAFKA_VERSION, ready_timeout_s: float = READY_TIMEOUT_S
) -> Broker:
    """Start a fresh broker whose files live in ``data_dir``; return once it serves metadata.

    The JVM runs in its own process group and outlives the caller unless stopped: call
    ``.stop()`` (or ``python -m pipeline.kafka.local down``). Raises LocalKafkaError when java or
    Maven is missing, a broker from ``data_dir`` still runs, or the broker is not ready in time.
    """
    java = _require_tool("java", "Java 17+ is needed to run the Kafka broker")
    data_dir = data_dir.resolve()
    if (previous := running(data_dir)) is not None:
        raise LocalKafkaError(
            f"a broker from {data_dir} already runs at {previous.bootstrap} (pid {previous.pid})"
        )
    classpath = f"{fetch_jars(version)}/*"
    data_dir.mkdir(parents=True, exist_ok=True)
    attempt = 1
    while True:
        broker = _launch(java, classpath, data_dir)
        try:
            _wait_ready(broker, ready_timeout_s)
        except LocalKafkaError as error:
            broker.stop()
            # The free ports were picked before the JVM bound them; someone may have been faster.
            if attempt < _PORT_ATTEMPTS and "BindException" in str(error):
                attempt += 1
                continue
            raise
        except BaseException:
            broker.stop()
            raise
        return broker


def restart(
    broker: Broker, *, down_s: float = 0.0, ready_timeout_s: float = READY_TIMEOUT_S
) -> Broker:
    """Stop a broker started by :func:`start`, wait `down_s` seconds, and start it again on the
    same ports and data (a broker outage, for tests); return once it serves metadata again."""
    broker.stop()
    time.sleep(down_s)
    java = _require_tool("java", "Java 17+ is needed to run the Kafka broker")
    again = _spawn(java, f"{fetch_jars()}/*", broker.data_dir, broker.bootstrap)
    try:
        _wait_ready(again, ready_timeout_s)
    except BaseException:
        again.stop()
        raise
    return again


def _launch(java: str, classpath: str, data_dir: Path) -> Broker:
    shutil.rmtree(data_dir / "kraft", ignore_errors=True)
    (data_dir / "broker.log").unlink(missing_ok=True)
    (data_dir / "broker.out").unlink(missing_ok=True)
    broker_port, controller_port = _free_ports(2)
    config = data_dir / "server.properties"
    config.write_text(_server_properties(data_dir, broker_port, controller_port))
    _format_storage(java, classpath, config)
    return _spawn(java, classpath, data_dir, f"127.0.0.1:{broker_port}")


def _spawn(java: str, classpath: str, data_dir: Path, bootstrap: str) -> Broker:
    config = data_dir / "server.properties"
    with (data_dir / "broker.out").open("ab") as jvm_output:
        process = subprocess.Popen(
            [
                java,
                *JVM_OPTIONS,
                f"-Dlog4j2.configurationFile={_LOG_CONFIG}",
                f"-Dkafka.logs.dir={data_dir}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(config),
            ],
            stdin=subprocess.DEVNULL,
            stdout=jvm_output,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            start_new_session=True,
        )
    broker = Broker(bootstrap, process.pid, data_dir, process)
    _write_state(broker)
    return broker


def running(data_dir: Path) -> Broker | None:
    """The broker recorded in ``data_dir`` if its process still runs, else None."""
    data_dir = data_dir.resolve()
    try:
        state = json.loads((data_dir / _STATE_FILE).read_text())
        broker = Broker(str(state["bootstrap"]), int(state["pid"]), data_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return broker if broker.is_alive() else None


def answers_metadata(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether a broker at ``host:port`` answers a Metadata request listing a live broker."""
    host, port = bootstrap.rsplit(":", 1)
    request = MetadataRequest_v5([], False)
    header = request.build_request_header(correlation_id=1, client_id="sessionize-localkafka")
    payload = header.encode() + request.encode()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
            connection.sendall(struct.pack(">i", len(payload)) + payload)
            (size,) = struct.unpack(">i", _receive_exactly(connection, 4))
            body = _receive_exactly(connection, size)
        # The response starts with the 4-byte correlation id.
        response = MetadataResponse_v5.decode(body[4:])
    except (OSError, ValueError, struct.error):
        return False
    return bool(response.get_item("brokers"))


def _wait_ready(broker: Broker, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers_metadata(broker.bootstrap):
        if not broker.is_alive():
            raise LocalKafkaError(
                f"the Kafka broker exited during start-up; see {broker.data_dir}/broker.log",
                _log_tail(broker.data_dir),
            )
        if time.monotonic() > deadline:
            raise LocalKafkaError(
                f"the Kafka broker at {broker.bootstrap} was not ready after {timeout_s:g} s; "
                f"see {broker.data_dir}/broker.log",
                _log_tail(broker.data_dir),
            )
        time.sleep(0.2)


def _server_properties(data_dir: Path, broker_port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "kraft"),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Consumer groups join at once instead of waiting 3 s for more members.
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _format_storage(java: str, classpath: str, config: Path) -> None:
    # Kafka's cluster ids are 16 random bytes in unpadded URL-safe base64.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    command = [
        java,
        f"-Dlog4j2.configurationFile={_LOG_CONFIG}",
        f"-Dkafka.logs.dir={config.parent}",
        "-cp",
        classpath,
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "--cluster-id",
        cluster_id,
        "--config",
        str(config),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalKafkaError(
            f"formatting Kafka storage in {config.parent} failed (exit {result.returncode})",
            _last_lines(result.stdout + result.stderr),
        )


def _write_state(broker: Broker) -> None:
    state = {"pid": broker.pid, "bootstrap": broker.bootstrap}
    (broker.data_dir / _STATE_FILE).write_text(json.dumps(state) + "\n")


def _is_broker_process(pid: int, data_dir: Path) -> bool:
    # The command line names this data dir's server.properties, so a reused pid is not taken for
    # the broker; a zombie counts as gone.
    if not Path("/proc/self").is_dir():
        # Without /proc (macOS) all we can check is that the pid exists.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    proc = Path(f"/proc/{pid}")
    try:
        command_line = (proc / "cmdline").read_bytes().split(b"\0")
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and str(data_dir / "server.properties").encode() in command_line


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _require_tool(name: str, why: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LocalKafkaError(f"`{name}` not found on PATH: {why}")
    return found


def _log_tail(data_dir: Path) -> str:
    parts = []
    for name in ("broker.log", "broker.out"):
        with contextlib.suppress(OSError):
            if text := (data_dir / name).read_text(errors="replace").strip():
                parts.append(f"--- {name} ---\n{_last_lines(text)}")
    return "\n".join(parts) or "(broker.log and broker.out are empty)"


def _last_lines(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:])


def _up(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    # Two `up`s at once must not start two brokers on one data dir.
    with _exclusive_lock(data_dir / ".lock"):
        if (broker := running(data_dir)) is not None:
            _wait_ready(broker, READY_TIMEOUT_S)
            return broker.bootstrap
        return start(data_dir).bootstrap


def _down(data_dir: Path) -> str:
    broker = running(data_dir)
    if broker is None:
        (data_dir / _STATE_FILE).unlink(missing_ok=True)
        return f"no broker running from {data_dir}"
    broker.stop()
    return f"stopped the broker at {broker.bootstrap} (pid {broker.pid})"


def _address(data_dir: Path) -> str:
    broker = running(data_dir)
    if broker is None or not answers_metadata(broker.bootstrap):
        raise LocalKafkaError(f"no broker answering from {data_dir}; start one with `up`")
    return broker.bootstrap


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``up`` / ``down`` / ``address``; errors are one line on stderr, exit 2."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.kafka.local", description="A local Kafka broker on 127.0.0.1."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (
        ("up", "start a broker in the background (or find the running one); print its address"),
        ("down", "stop the broker started by `up`"),
        ("address", "print the address of the running broker"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    arguments = parser.parse_args(argv)
    data_dir: Path = arguments.data_dir
    try:
        if arguments.command == "up":
            print(_up(data_dir))
        elif arguments.command == "address":
            print(_address(data_dir))
        else:
            print(_down(data_dir), file=sys.stderr)
    except LocalKafkaError as error:
        print(f"localkafka: {error.summary}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
