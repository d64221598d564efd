"""The canonical format of pipeline/partners/canonical.py."""

from __future__ import annotations

from pipeline.partners.canonical import translate


def test_records_pass_unchanged_and_shared(canonical_input):
    # The same object: records are never changed once emitted, so writers serialize it once.
    for record in canonical_input:
        before = dict(record)
        [output] = translate(record)
        assert output is record
        assert output == before


def test_session_and_event_keys_are_unique_across_the_input(canonical_input):
    keys = [
        (output["type"], output.get("event_id"), output["session_id"])
        for record in canonical_input
        for output in translate(record)
    ]
    assert len(set(keys)) == len(keys)
