"""Topic limits: what the pipeline's topics need, and the one line when one lacks it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from pipeline.config import Config
from pipeline.input import Limits
from pipeline.kafka.topics import (
    BATCH_OVERHEAD_BYTES,
    TopicTooSmall,
    _check_setting,
    changelog_max_message_bytes,
    changelog_topic,
    describe_when_known,
    max_message_bytes,
    repartition_topic,
    required_configs,
)
from pipeline.partners import Partner


def test_every_topic_holds_the_largest_record_and_an_event_of_max_event_bytes() -> None:
    config = Config()
    needed = max_message_bytes(config)
    assert needed == Limits().max_record_bytes + BATCH_OVERHEAD_BYTES
    assert needed > config.limits.max_event_bytes + 4096  # an event with its key and headers
    required = required_configs(config)
    topics = config.topics
    for name in (topics.input, topics.sessions, topics.enriched, topics.deadletter):
        assert required[name] == {"max.message.bytes": str(needed)}
    assert required[repartition_topic(config)] == {"max.message.bytes": str(needed)}


def test_the_changelog_is_compacted_and_holds_every_profile_state_at_its_largest() -> None:
    config = Config(partners=())
    changelog = required_configs(config)[changelog_topic(config)]
    assert changelog["cleanup.policy"] == "compact"
    one_profile = int(changelog["max.message.bytes"])
    # 2 x 10,000 ids of 128 characters escaped 6 bytes each, and a record's worth of the rest.
    assert one_profile == 2 * 10_000 * 771 + Limits().max_record_bytes + BATCH_OVERHEAD_BYTES
    kit = Partner(name="braze", format="braze", topic="braze", session_timeout_s=10)
    two_profiles = changelog_max_message_bytes(replace(config, partners=(kit,)))
    assert two_profiles - BATCH_OVERHEAD_BYTES == 2 * (one_profile - BATCH_OVERHEAD_BYTES)


def test_a_bigger_max_event_bytes_asks_bigger_topics() -> None:
    config = Config(limits=Limits(max_event_bytes=4_000_000))
    assert max_message_bytes(config) == 4_000_000 + 65_536 + BATCH_OVERHEAD_BYTES


@pytest.mark.parametrize(
    ("found", "fits"), [("1130496", True), ("9999999", True), ("1048588", False)]
)
def test_max_message_bytes_is_enough_when_at_least_what_is_needed(found: str, fits: bool) -> None:
    config = Config()
    if fits:
        _check_setting(config, "t", "max.message.bytes", found, "1130496")
        return
    with pytest.raises(TopicTooSmall) as refused:
        _check_setting(config, "events.enriched", "max.message.bytes", found, "1130496")
    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith(
        "topic 'events.enriched' has max.message.bytes=1048588; the pipeline needs "
        "max.message.bytes=1130496 or more, to hold its largest record (kafka-configs.sh "
    )


def test_a_changelog_that_is_not_compacted_is_refused() -> None:
    config = Config()
    _check_setting(config, "c", "cleanup.policy", "compact,delete", "compact")
    with pytest.raises(TopicTooSmall) as refused:
        _check_setting(config, "c", "cleanup.policy", "delete", "compact")
    assert "has cleanup.policy=delete; the pipeline needs cleanup.policy=compact " in str(
        refused.value
    )


class _LaggingAdmin:
    """An admin whose broker learns of a new topic after `unknown_for` describes."""

    def __init__(self, unknown_for: int) -> None:
        self.unknown_for = unknown_for
        self.calls = 0

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls <= self.unknown_for:
            return [{"topic": topics[0], "error_code": 3, "partitions": []}]
        return [{"topic": topics[0], "error_code": 0, "partitions": [{"partition": 0}]}]


def test_a_topic_just_created_is_described_once_the_brokers_metadata_has_it() -> None:
    admin = _LaggingAdmin(unknown_for=2)
    described = asyncio.run(describe_when_known(admin, "t"))  # type: ignore[arg-type]
    assert described["partitions"] == [{"partition": 0}] and admin.calls == 3


def test_a_topic_the_broker_never_learns_of_is_answered_as_unknown_after_the_wait() -> None:
    admin = _LaggingAdmin(unknown_for=1_000_000)
    described = asyncio.run(describe_when_known(admin, "t", wait_s=0.3))  # type: ignore[arg-type]
    assert described["error_code"] == 3 and 2 <= admin.calls <= 5
