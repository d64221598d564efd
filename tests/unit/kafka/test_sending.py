"""Sending without a broker: the key and event count of a raw message, the summary line."""

from __future__ import annotations

import pytest

from pipeline.kafka.sending import ProduceStats, device_key


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b'{"device_id": "d1", "type": "app_launch"}', (b"d1", 1)),
        (b'{"device_id": "d1", "events": [{}, {}, {}]}', (b"d1", 3)),
        (b'{"device_id": 7}', (None, 1)),
        (b"[1, 2]", (None, 1)),
        (b"\xffnot json", (None, 1)),
    ],
)
def test_device_key_is_the_device_id_and_the_events_counted(
    message: bytes, expected: tuple[bytes | None, int]
) -> None:
    assert device_key(message) == expected


def test_summary_line_names_the_first_error() -> None:
    stats = ProduceStats("t", delivered=9, failed=1, events=20, elapsed_s=2.0, first_error="E: x")
    assert stats.summary_line() == (
        "sent 9 messages (20 events) to t in 2.0 s: 1 failed, 10 events/s (first error: E: x)"
    )
