"""Broker outages in the worker's log (the clients' repeats held back, a few lines of ours), and
a command's refused connection said in one line."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import SaslAuthenticationFailed, UnsupportedSaslMechanismError

from pipeline.config import Config, KafkaSettings
from pipeline.kafka.outages import ClientNoise, quiet_client_log, refusal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client_record(message: str, *args: object, name: str = "aiokafka.client") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, args, None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def noise(clock: Clock) -> ClientNoise:
    return ClientNoise(window_s=60.0, report_every_s=30.0, clock=clock)


def unable_to_connect() -> logging.LogRecord:
    return client_record("Unable connect to node with id %s: %s", 1, "Connect call failed")


def test_an_outage_is_one_line_of_ours_and_each_client_error_once(
    noise: ClientNoise, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sessionize.kafka")
    passed = []
    for _ in range(20):  # 2,000 lines over 20 s
        for _ in range(50):
            passed.append(noise.filter(unable_to_connect()))
            passed.append(noise.filter(client_record("Unable to update metadata from %s", [1])))
        clock.now += 1.0
    assert passed.count(True) == 2
    assert noise.in_outage
    noise.back()
    assert not noise.in_outage
    assert [r.getMessage() for r in caplog.records] == [
        "Kafka unreachable (Unable connect to node with id 1: Connect call failed); the clients "
        "retry until it answers, and their repeated errors are counted, not logged",
        "Kafka reachable again after 20 s (1998 repeated client log lines held back)",
    ]


def test_a_long_outage_says_every_30s_that_it_lasts(
    noise: ClientNoise, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sessionize.kafka")
    for _ in range(90):
        noise.filter(unable_to_connect())
        clock.now += 1.0
    still = [r.getMessage() for r in caplog.records if "still" in r.getMessage()]
    assert still == [
        "Kafka still unreachable after 30 s (30 repeated client log lines held back)",
        # (at 60 s its line passed again: a minute after it last did)
        "Kafka still unreachable after 61 s (60 repeated client log lines held back)",
    ]


def test_after_the_window_a_repeat_passes_again(noise: ClientNoise, clock: Clock) -> None:
    assert noise.filter(unable_to_connect())
    clock.now += 59.0
    assert not noise.filter(unable_to_connect())
    clock.now += 1.0
    assert noise.filter(unable_to_connect())


def test_other_loggers_and_info_lines_always_pass(noise: ClientNoise) -> None:
    for _ in range(3):
        assert noise.filter(client_record("session closed", name="sessionize.worker"))
        info = client_record("Discovered coordinator %s", 1)
        info.levelno = logging.INFO
        assert noise.filter(info)
    assert not noise.in_outage


def test_a_record_is_judged_once_whatever_the_handlers(noise: ClientNoise) -> None:
    record = unable_to_connect()
    assert noise.filter(record) and noise.filter(record)  # the second handler sees it too
    assert noise.held == 0


def test_repeats_outside_an_outage_are_held_and_counted(
    noise: ClientNoise, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sessionize.kafka")
    timer = "Timer %s is overlapping"
    for _ in range(40):
        noise.filter(client_record(timer, "expiry", name="faust.app.base"))
        clock.now += 1.0
    assert not noise.in_outage
    assert [r.getMessage() for r in caplog.records] == [
        "31 repeated Kafka client log lines held back in the last 30 s"
    ]


SASL = Config(
    kafka=KafkaSettings(
        bootstrap="kafka:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="sessionize",
        sasl_password="hunter2",
    )
)


def test_a_refused_sasl_mechanism_names_what_the_broker_accepts() -> None:
    error = UnsupportedSaslMechanismError("Enabled mechanisms are: ['PLAIN']")
    assert refusal(SASL, [OSError("earlier"), error]) == (
        "Kafka at kafka:9093 refused SASL mechanism SCRAM-SHA-512 (it accepts PLAIN)"
    )


def test_a_failed_login_never_shows_the_password() -> None:
    said = refusal(SASL, [SaslAuthenticationFailed("bad password hunter2\nmore")])
    assert said == (
        "Kafka at kafka:9093 refused to authenticate user 'sessionize' with SCRAM-SHA-512: "
        "bad password ***"
    )


def test_a_connection_that_was_not_refused_is_no_refusal() -> None:
    assert refusal(SASL, [OSError("connection refused")]) is None


def test_the_quiet_client_log_keeps_the_errors_aiokafka_names() -> None:
    error = OSError("unreachable")
    with quiet_client_log() as client_log:
        logging.getLogger("aiokafka.conn").error("Unable connect to %s: %s", "kafka:9093", error)
    assert client_log.errors == [error]
    assert logging.getLogger("aiokafka").propagate
