"""Kafka outages and refusals in our output: a few lines of ours instead of the clients' many.

While the brokers are unreachable, aiokafka logs every failed connection, metadata refresh, fetch
and coordinator lookup, several times a second: a 20 s outage wrote about 2,000 ERROR lines to a
worker's log, although the worker recovered on its own. `ClientNoise` is a logging filter for
the worker's handlers that lets each distinct warning or error of the Kafka clients (aiokafka,
faust, mode) through once per `window_s` and counts the repeats instead. Our own lines say what
happened: when an outage began (with the first client error), every `report_every_s` while it
lasts, and how long it lasted once the worker reached Kafka again (`back`).

A command that connects once (`sessionize topics`, `produce`, `consume`, the worker's start)
keeps aiokafka's log off stderr with `quiet_client_log` and, when the brokers answered but
refused it (SASL, TLS), says why in one line with `refusal`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterator, Sequence

from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from pipeline.config import Config

log = logging.getLogger("sessionize.kafka")

CLIENT_LOGGERS = ("aiokafka", "faust", "mode")
# What aiokafka says when it cannot reach a broker (a connection, a metadata refresh, a fetch).
_UNREACHABLE = (
    "Unable connect to node",
    "Unable to update metadata",
    "Connect call failed",
    "NodeNotReadyError",
    "KafkaConnectionError",
    "RequestTimedOutError",
)
_JUDGED = "_sessionize_noise"  # a record passes every handler's filters: judge it once


class ClientNoise(logging.Filter):
    """Holds back repeats of the Kafka clients' warnings and errors; says when Kafka went away
    and when it came back."""

    def __init__(
        self,
        window_s: float = 60.0,
        report_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.report_every_s = report_every_s
        self.clock = clock
        self.passed_at: dict[tuple[str, object], float] = {}  # (logger, format) -> last passed
        self.held = 0  # repeats held back: in this outage, or since `reported_at` outside one
        self.reported_at = 0.0
        self.outage_since: float | None = None

    @property
    def in_outage(self) -> bool:
        """The clients said a broker could not be reached, and `back` has not been called."""
        return self.outage_since is not None

    def filter(self, record: logging.LogRecord) -> bool:
        verdict: bool | None = getattr(record, _JUDGED, None)
        if verdict is None:
            verdict = self._judge(record)
            setattr(record, _JUDGED, verdict)
        return verdict

    def back(self) -> None:
        """The worker reached Kafka again: the outage, if one was on, is over."""
        if self.outage_since is None:
            return
        log.warning(
            "Kafka reachable again after %.0f s (%d repeated client log lines held back)",
            self.clock() - self.outage_since,
            self.held,
        )
        self.outage_since = None
        self.held = 0
        self.passed_at.clear()  # the next outage shows its errors again

    def _judge(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(CLIENT_LOGGERS):
            return True
        now = self.clock()
        if self.outage_since is None and _unreachable(record):
            self._report(now)  # what was held back before
            self.outage_since = self.reported_at = now
            self.held = 0
            log.warning(
                "Kafka unreachable (%s); the clients retry until it answers, and their repeated "
                "errors are counted, not logged",
                record.getMessage(),
            )
        key = (record.name, record.msg)
        passed = self.passed_at.get(key)
        if passed is None or now - passed >= self.window_s:
            self.passed_at[key] = now
            return True
        if not self.held and self.outage_since is None:
            self.reported_at = now
        self.held += 1
        if now - self.reported_at >= self.report_every_s:
            self._report(now)
        return False

    def _report(self, now: float) -> None:
        if not self.held:
            return
        if self.outage_since is not None:
            log.warning(
                "Kafka still unreachable after %.0f s (%d repeated client log lines held back)",
                now - self.outage_since,
                self.held,
            )
        else:
            log.warning(
                "%d repeated Kafka client log lines held back in the last %.0f s",
                self.held,
                now - self.reported_at,
            )
            self.held = 0
        self.reported_at = now


def _unreachable(record: logging.LogRecord) -> bool:
    if not record.name.startswith("aiokafka"):
        return False
    message = record.getMessage()
    return any(sign in message for sign in _UNREACHABLE)


# The worker's filter (installed on its log handlers by pipeline.streaming.worker).
client_noise = ClientNoise()


class ClientLog(logging.Handler):
    """What aiokafka logs, kept off stderr, and the errors it names: a client that cannot
    connect logs why ("Unable connect to ...: <error>") and raises only "Unable to bootstrap"."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple):
            self.errors.extend(arg for arg in record.args if isinstance(arg, BaseException))


@contextlib.contextmanager
def quiet_client_log() -> Iterator[ClientLog]:
    """While open, aiokafka's log lines print nowhere (our one-line errors say what happened)."""
    client_log = logging.getLogger("aiokafka")
    handler = ClientLog()
    propagate = client_log.propagate
    client_log.addHandler(handler)
    client_log.propagate = False
    try:
        yield handler
    finally:
        client_log.removeHandler(handler)
        client_log.propagate = propagate


def refusal(config: Config, errors: Sequence[BaseException]) -> str | None:
    """One line for a broker that answered but refused the connection (SASL, TLS), or None."""
    kafka = config.kafka
    where = f"Kafka at {kafka.bootstrap}"
    for error in reversed(errors):
        if isinstance(error, UnsupportedSaslMechanismError):
            accepted = re.search(r"Enabled mechanisms are: \[(.*)\]", str(error))
            offer = f" (it accepts {accepted[1].replace(chr(39), '')})" if accepted else ""
            return f"{where} refused SASL mechanism {kafka.sasl_mechanism}{offer}"
        if isinstance(error, SaslAuthenticationFailed | AuthenticationFailedError):
            said = str(error.args[0]) if error.args and isinstance(error.args[0], str) else ""
            if kafka.sasl_password:
                said = said.replace(kafka.sasl_password, "***")
            said = f": {said.splitlines()[0][:120]}" if said.strip() else ""
            return (
                f"{where} refused to authenticate user '{kafka.sasl_username}' "
                f"with {kafka.sasl_mechanism}{said}"
            )
        if isinstance(error, IllegalSaslStateError):
            return (
                f"{where} does not take SASL on this listener "
                f"(security_protocol {kafka.security_protocol}): the broker refused the handshake"
            )
        if isinstance(error, ssl.SSLError):
            return f"TLS with {where} failed ({error.reason or type(error).__name__})"
        if isinstance(error, ConnectionResetError) and kafka.security_protocol.endswith("SSL"):
            return (
                f"TLS with {where} failed: the broker closed the connection during the "
                "handshake (a listener without TLS?)"
            )
    return None
