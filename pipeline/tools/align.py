"""Kit alignment: how a partner's own session timeout splits the pipeline's sessions.

Analytics kits keep their own sessions (Braze: 10 s on mobile; Amplitude: 5 min; GA4 and
Mixpanel: 30 min), so their session counts rarely match the pipeline's. `align` runs the same
rules once per timeout over a file and reports, per partner, its session count against the
pipeline's and the share of events whose session has exactly the same boundaries (same first
event, same events) under both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from pipeline.config import Config
from pipeline.engine import Applied, DeviceState, Record, SessionConfig, SessionRules
from pipeline.input import parse_message
from pipeline.processing.processor import kit_config

# Timeouts tried by the sweep: common kit defaults and the pipeline's usual range.
SWEEP_S = (10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0)


@dataclass(frozen=True, slots=True)
class Sessions:
    """Sessions of one run: for each event id, the (first event id, size) of its session."""

    count: int
    boundaries: dict[tuple[str, str, str], tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Alignment:
    """One partner's sessions against the pipeline's."""

    partner: str
    timeout_s: float | None  # None: the pipeline's own timeouts
    sessions: int
    pipeline_sessions: int
    agreeing_events: int
    events: int

    @property
    def agreement(self) -> float:
        """Share of events whose session has the same boundaries under both."""
        return self.agreeing_events / self.events if self.events else 1.0


def read_events(source: IO[bytes], config: Config, now_ms: int) -> list[Record]:
    """The valid events of a JSONL input, in order (rejections are left to `run`)."""
    events: list[Record] = []
    for line in source:
        message = line[:-1] if line.endswith(b"\n") else line
        events.extend(parse_message(message, now_ms, config.limits).events)
    return events


def sessionize(events: Iterable[Record], sessions: SessionConfig) -> Sessions:
    """Run the rules over events and describe each applied event's session."""
    rules = SessionRules(sessions)
    states: dict[tuple[str, str], DeviceState] = {}
    members: dict[str, list[tuple[str, str, str]]] = {}
    out: list[Record] = []
    for event in events:
        key = (event["app_id"], event["device_id"])
        state = states.get(key) or states.setdefault(key, rules.new_state(*key))
        if rules.apply(state, event, out) is Applied.APPLIED:
            enriched = next(r for r in out if "session_seq" in r)
            identity = (*key, event["event_id"])
            members.setdefault(enriched["session_id"], []).append(identity)
        out.clear()
    boundaries = {
        identity: (events_of_session[0][2], len(events_of_session))
        for events_of_session in members.values()
        for identity in events_of_session
    }
    return Sessions(len(members), boundaries)


def compare(name: str, timeout_s: float | None, kit: Sessions, pipeline: Sessions) -> Alignment:
    """How `kit`'s sessions line up with the pipeline's."""
    agreeing = sum(
        1
        for identity, shape in pipeline.boundaries.items()
        if kit.boundaries.get(identity) == shape
    )
    return Alignment(name, timeout_s, kit.count, pipeline.count, agreeing, len(pipeline.boundaries))


def align(events: list[Record], config: Config) -> list[Alignment]:
    """One Alignment per configured partner."""
    pipeline = sessionize(events, config.sessions)
    by_timeout: dict[float, Sessions] = {}
    report = []
    for partner in config.partners:
        timeout = partner.session_timeout_s
        if timeout is None:
            report.append(compare(partner.name, None, pipeline, pipeline))
            continue
        if timeout not in by_timeout:
            by_timeout[timeout] = sessionize(events, kit_config(config.sessions, timeout))
        report.append(compare(partner.name, timeout, by_timeout[timeout], pipeline))
    return report


def sweep(events: list[Record], config: Config) -> list[Alignment]:
    """The pipeline's sessions against a kit at each of SWEEP_S."""
    pipeline = sessionize(events, config.sessions)
    return [
        compare(f"kit @ {t:g} s", t, sessionize(events, kit_config(config.sessions, t)), pipeline)
        for t in SWEEP_S
    ]


def render(rows: list[Alignment]) -> str:
    """A plain-text table of alignments."""
    header = (
        f"{'partner':<16} {'timeout':>9} {'sessions':>9} {'pipeline':>9} {'ratio':>6} "
        f"{'events agreeing':>16}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        timeout = "pipeline" if row.timeout_s is None else f"{row.timeout_s:g} s"
        ratio = row.sessions / row.pipeline_sessions if row.pipeline_sessions else 1.0
        lines.append(
            f"{row.partner:<16} {timeout:>9} {row.sessions:>9} {row.pipeline_sessions:>9} "
            f"{ratio:>6.2f} {row.agreement:>15.1%}"
        )
    return "\n".join(lines)
