"""Topic limits: what the pipeline's topics need, and the one line when one lacks it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.config import Config
from pipeline.input import Limits
from pipeline.kafka.topics import (
    BATCH_OVERHEAD_BYTES,
    TopicTooSmall,
    _check_setting,
    changelog_max_message_bytes,
    changelog_topic,
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
