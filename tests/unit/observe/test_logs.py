"""The worker's log: JSON lines with our fields, and the clients' internals at debug only."""

from __future__ import annotations

import logging

import orjson

from pipeline.observe.logs import FIELDS, JsonFormatter, configure


def test_a_json_line_carries_the_message_and_the_lines_own_fields() -> None:
    record = logging.LogRecord("sessionize.worker", logging.INFO, "x", 1, "ready: %s", ("p",), None)
    setattr(record, FIELDS, {"event": "ready", "partitions": [0, 1]})
    line = orjson.loads(JsonFormatter().format(record))
    assert line["message"] == "ready: p"
    assert (line["level"], line["logger"]) == ("info", "sessionize.worker")
    assert (line["event"], line["partitions"]) == ("ready", [0, 1])


def test_faust_and_aiokafka_info_lines_show_only_at_debug() -> None:
    root = logging.getLogger("test-root")
    try:
        configure(root, logging.INFO, "text")
        assert not logging.getLogger("aiokafka.consumer").isEnabledFor(logging.INFO)
        assert not logging.getLogger("faust.tables").isEnabledFor(logging.INFO)
        assert logging.getLogger("aiokafka").isEnabledFor(logging.WARNING)
        configure(root, logging.DEBUG, "text")
        assert logging.getLogger("faust.tables").isEnabledFor(logging.DEBUG)
    finally:
        for name in ("aiokafka", "faust", "mode"):
            logging.getLogger(name).setLevel(logging.NOTSET)
