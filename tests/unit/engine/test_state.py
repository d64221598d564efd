"""What the session rules keep per device, and what they say of an event they were given."""

from __future__ import annotations

import pytest

from pipeline.engine import Applied, DeviceState, SessionConfig, SessionRules


@pytest.mark.parametrize(
    ("verdict", "rejected"),
    [
        (Applied.APPLIED, False),
        (Applied.DUPLICATE, False),  # dropped, as SPEC 3 rule 1 says, not dead-lettered
        (Applied.ATTRIBUTE_NOT_NUMERIC, True),
        (Applied.ATTRIBUTE_OUT_OF_RANGE, True),
    ],
)
def test_only_refused_attribute_changes_are_rejections(verdict: Applied, rejected: bool) -> None:
    assert verdict.rejected is rejected


def test_a_device_never_seen_has_no_sessions_and_nothing_to_wake_for() -> None:
    rules = SessionRules(SessionConfig())
    state = rules.new_state("a1", "d1")
    assert state == DeviceState("a1", "d1")
    assert (state.session_count, state.open, state.last_closed) == (0, None, None)
    assert state.earlier == []
    assert rules.deadline(state) is None
