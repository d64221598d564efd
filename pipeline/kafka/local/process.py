"""The local broker's process: a fresh KRaft node started in a data directory, found again
from the state it leaves there, restarted on the same ports, stopped with its process group."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.kafka.local.probe import answers_metadata
from pipeline.kafka.local.tooling import (
    KAFKA_VERSION,
    LOG_CONFIG,
    LocalKafkaError,
    fetch_jars,
    last_lines,
    require_tool,
)

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
JVM_OPTIONS = ("-Xmx768m", "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
STATE_FILE = "broker.json"
_PORT_ATTEMPTS = 3


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
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)

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


def start(
    data_dir: Path, *, version: str = KAFKA_VERSION, ready_timeout_s: float = READY_TIMEOUT_S
) -> Broker:
    """Start a fresh broker whose files live in ``data_dir``; return once it serves metadata.

    The JVM runs in its own process group and outlives the caller unless stopped: call
    ``.stop()`` (or ``python -m pipeline.kafka.local down``). Raises LocalKafkaError when java or
    Maven is missing, a broker from ``data_dir`` still runs, or the broker is not ready in time.
    """
    java = require_tool("java", "Java 17+ is needed to run the Kafka broker")
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
            wait_ready(broker, ready_timeout_s)
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
    java = require_tool("java", "Java 17+ is needed to run the Kafka broker")
    again = _spawn(java, f"{fetch_jars()}/*", broker.data_dir, broker.bootstrap)
    try:
        wait_ready(again, ready_timeout_s)
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
                f"-Dlog4j2.configurationFile={LOG_CONFIG}",
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
        state = json.loads((data_dir / STATE_FILE).read_text())
        broker = Broker(str(state["bootstrap"]), int(state["pid"]), data_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return broker if broker.is_alive() else None


def wait_ready(broker: Broker, timeout_s: float) -> None:
    """Until `broker` serves metadata; LocalKafkaError if it exits or `timeout_s` passes."""
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


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in unpadded URL-safe base64, never starting with
    "-" (the storage tool would take it for a flag: one broker start in 64 failed so; Kafka's
    own `Uuid.randomUuid` draws again likewise)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(java: str, classpath: str, config: Path) -> None:
    cluster_id = random_cluster_id()
    command = [
        java,
        f"-Dlog4j2.configurationFile={LOG_CONFIG}",
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
            last_lines(result.stdout + result.stderr),
        )


def _write_state(broker: Broker) -> None:
    state = {"pid": broker.pid, "bootstrap": broker.bootstrap}
    (broker.data_dir / STATE_FILE).write_text(json.dumps(state) + "\n")


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


def _log_tail(data_dir: Path) -> str:
    parts = []
    for name in ("broker.log", "broker.out"):
        with contextlib.suppress(OSError):
            if text := (data_dir / name).read_text(errors="replace").strip():
                parts.append(f"--- {name} ---\n{last_lines(text)}")
    return "\n".join(parts) or "(broker.log and broker.out are empty)"
