"""Broker outages in the worker's log: a few lines of ours instead of thousands of the clients'.

While the brokers are unreachable, aiokafka logs every failed connection, metadata refresh, fetch
and coordinator lookup, several times a second: a 20 s outage wrote about 2,000 ERROR lines to a
worker's log, although the worker recovered on its own. `ClientNoise` is a logging filter for
the worker's handlers that lets each distinct warning or error of the Kafka clients (aiokafka,
faust, mode) through once per `window_s` and counts the repeats instead. Our own lines say what
happened: when an outage began (with the first client error), every `report_every_s` while it
lasts, and how long it lasted once the worker reached Kafka again (`back`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

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
