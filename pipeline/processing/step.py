"""The one-message step every adapter runs: parse, apply each event, say what was rejected.

A message (a line offline, a Kafka value in the worker) is parsed into valid events and
rejections (`pipeline.input.events`); each valid event is handed to the adapter's `apply_event`,
which finds the device's states and applies it (`Processor.apply`); an event the session rules
refuse (a session_attribute increment) becomes a rejection too, attributed to its batch
position. The adapter turns rejections into dead letters with its own origin (a line number, or
topic/partition/offset).

`apply_event` returns None for an event it does not apply here (the worker: its device belongs
to another partition); the step keeps those, with their batch positions, for the adapter to
forward.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from pipeline.engine import Applied, Record
from pipeline.input import (
    NOT_DECODED,
    Limits,
    Rejection,
    attribute_rejection,
    dead_letter,
    parse_message,
)

# Applies one valid event to its device; None: not applied here (for another partition).
EventApplier = Callable[[Record], Applied | None]


class MessageStep:
    """Runs one message at a time through `apply_event`; counts what was not applied."""

    def __init__(self, apply_event: EventApplier, max_dead_letter_payload_bytes: int) -> None:
        self.apply_event = apply_event
        self.max_payload = max_dead_letter_payload_bytes
        self.verdicts: Counter[Applied] = Counter()  # every verdict but APPLIED
        # Events of the last message `apply_event` left alone, and their batch positions.
        self.elsewhere: list[Record] = []
        self.elsewhere_indices: list[int | None] = []
        self.parse_rejections: list[Rejection] = []  # the last message's, before the rules'

    def run(
        self,
        message: bytes,
        now_ms: int,
        limits: Limits,
        forwarded_indices: list[int | None] | None = None,
        document: Any = NOT_DECODED,
    ) -> list[Rejection]:
        """Parse and apply one message; returns its rejections (do not change the list).

        `now_ms` is the processing time (future-skew check). `forwarded_indices`: the batch
        positions of the events of a message forwarded to this partition (the events of its
        original batch, in order), which its rejections name instead of their own positions.
        `document`: the message already decoded (see `parse_message`). The rejections of
        parsing come first in the list; `parse_rejections` holds those.
        """
        parsed = parse_message(message, now_ms, limits, document)
        rejections = self.parse_rejections = parsed.rejections
        if self.elsewhere:
            self.elsewhere = []
            self.elsewhere_indices = []
        apply_event = self.apply_event
        applied = Applied.APPLIED
        for position, event in enumerate(parsed.events):
            verdict = apply_event(event)
            if verdict is applied:
                continue
            if forwarded_indices is not None:
                index = forwarded_indices[position]
            else:
                index = parsed.indices[position] if parsed.indices is not None else None
            if verdict is None:
                self.elsewhere.append(event)
                self.elsewhere_indices.append(index)
                continue
            self.verdicts[verdict] += 1
            if verdict.rejected:
                if rejections is parsed.rejections:
                    rejections = list(rejections)  # (parsed's may be a shared empty list)
                rejections.append(attribute_rejection(verdict.value, event, index, message))
        return rejections

    def dead_letter(self, rejection: Rejection, message: bytes, origin: dict[str, Any]) -> Record:
        """The dead letter of one of `message`'s rejections, coming from `origin`."""
        return dead_letter(rejection, message, origin, self.max_payload)
