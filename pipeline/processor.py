"""From applied events to every output: the pipeline's sessions and each partner's own.

A `Processor` runs the session rules once for the pipeline and once more for each distinct
partner timeout (a partner kit keeps its own sessions), and routes the records each run emits:
the pipeline's to the canonical outputs, every run's to its partners in their formats. Offline
mode and the worker both use it; it holds no device state itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from pipeline.engine import Applied, DeviceState, Record, SessionConfig, SessionRules
from pipeline.partners import Partner, partner_records

SESSION_RECORD_TYPES = frozenset(("session_start", "session_end"))


@dataclass(slots=True)
class Outputs:
    """Records waiting to be written, per output."""

    sessions: list[Record] = field(default_factory=list)
    enriched: list[Record] = field(default_factory=list)
    partners: dict[str, list[Record]] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget what has been written."""
        self.sessions.clear()
        self.enriched.clear()
        for records in self.partners.values():
            records.clear()


@dataclass(frozen=True, slots=True)
class Profile:
    """One run of the rules: the pipeline's own (`canonical`), or a partner timeout's."""

    rules: SessionRules
    partners: tuple[Partner, ...]
    canonical: bool


def kit_config(sessions: SessionConfig, timeout_s: float) -> SessionConfig:
    """The rules a partner kit with its own fixed timeout applies (no app or SDK overrides)."""
    return replace(
        sessions, session_timeout_s=timeout_s, app_session_timeout_s={}, honor_event_timeout=False
    )


class Processor:
    """Applies events to a device's states (one per profile) and routes what they emit."""

    def __init__(self, sessions: SessionConfig, partners: Iterable[Partner]) -> None:
        partners = tuple(partners)
        own = tuple(p for p in partners if p.session_timeout_s is None)
        profiles = [Profile(SessionRules(sessions), own, canonical=True)]
        timeouts = sorted({p.session_timeout_s for p in partners if p.session_timeout_s})
        for timeout in timeouts:
            kit = kit_config(sessions, timeout)
            members = tuple(p for p in partners if p.session_timeout_s == timeout)
            profiles.append(Profile(SessionRules(kit), members, canonical=False))
        self.profiles: tuple[Profile, ...] = tuple(profiles)
        self.partners = partners
        self._scratch: list[Record] = []

    def new_outputs(self) -> Outputs:
        """An empty Outputs with a list per partner."""
        return Outputs(partners={p.name: [] for p in self.partners})

    def new_states(self, app_id: str, device_id: str) -> list[DeviceState]:
        """States of a device never seen before, one per profile."""
        return [DeviceState(app_id, device_id) for _ in self.profiles]

    def apply(self, states: list[DeviceState], event: Record, out: Outputs) -> Applied:
        """Apply a valid event under every profile; the pipeline's verdict is returned."""
        verdict = Applied.APPLIED
        for profile, state in zip(self.profiles, states, strict=True):
            emitted = self._scratch
            result = profile.rules.apply(state, event, emitted)
            if profile.canonical:
                verdict = result
            self._route(profile, emitted, out)
        return verdict

    def expire(self, states: list[DeviceState], now_ts: int, out: Outputs) -> None:
        """Close every profile's session whose deadline is at or before event time `now_ts`."""
        for profile, state in zip(self.profiles, states, strict=True):
            emitted = self._scratch
            profile.rules.expire(state, now_ts, emitted)
            self._route(profile, emitted, out)

    def close_at_end(self, states: list[DeviceState], out: Outputs) -> None:
        """End of input: close every open session."""
        for profile, state in zip(self.profiles, states, strict=True):
            emitted = self._scratch
            profile.rules.close_at_end(state, emitted)
            self._route(profile, emitted, out)

    def deadline(self, states: list[DeviceState]) -> int | None:
        """The earliest deadline over the profiles (None: no session open anywhere)."""
        deadlines = [
            d
            for profile, state in zip(self.profiles, states, strict=True)
            if (d := profile.rules.deadline(state)) is not None
        ]
        return min(deadlines, default=None)

    def _route(self, profile: Profile, emitted: list[Record], out: Outputs) -> None:
        if not emitted:
            return
        if profile.canonical:
            for record in emitted:
                if record["type"] in SESSION_RECORD_TYPES:
                    out.sessions.append(record)
                else:
                    out.enriched.append(record)
        for partner in profile.partners:
            records = out.partners[partner.name]
            for record in emitted:
                records.extend(partner_records(partner, record))
        emitted.clear()
