"""From applied events to every output: the pipeline's sessions and each partner's own.

A `Processor` runs the session rules once for the pipeline and once more for each distinct
partner timeout (a partner kit keeps its own sessions), and routes the records each run emits:
the pipeline's to its own outputs (sessions, enriched), every run's to its partners in their
formats. Offline mode and the worker both use it; it holds no device state itself.

The pipeline's records stay in one list in the order they were emitted
(`Outputs.pipeline_records`): the sessions output is its session records, the enriched output
the rest, and a partner in the canonical format without filters gets it whole.
`pipeline.processing.routing` splits it once per batch of records, not per event, and
serializes each record once for every output that carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from pipeline.engine import Applied, DeviceState, Record, SessionConfig, SessionRules
from pipeline.partners import Partner, partner_records


@dataclass(slots=True)
class Outputs:
    """Records waiting to be written.

    `pipeline_records`: the pipeline's own records, in emitted order (sessions and enriched events
    interleaved); the partners named in `verbatim` take exactly these. `partners`: what every
    other partner gets, in its format.
    """

    pipeline_records: list[Record] = field(default_factory=list)
    partners: dict[str, list[Record]] = field(default_factory=dict)
    verbatim: tuple[str, ...] = ()

    def clear(self) -> None:
        """Forget what has been written."""
        self.pipeline_records.clear()
        for records in self.partners.values():
            records.clear()


@dataclass(frozen=True, slots=True)
class Profile:
    """One run of the rules: the pipeline's own (`is_pipeline`), or a partner timeout's."""

    rules: SessionRules
    partners: tuple[Partner, ...]
    is_pipeline: bool

    @property
    def verbatim(self) -> tuple[str, ...]:
        """Partners that take every record of this run unchanged (canonical format, no filter)."""
        return tuple(p.name for p in self.partners if _verbatim(p))

    @property
    def formatted(self) -> tuple[Partner, ...]:
        """Partners whose records go through their filters and format."""
        return tuple(p for p in self.partners if not _verbatim(p))


def _verbatim(partner: Partner) -> bool:
    return (
        partner.format == "canonical"
        and partner.sessions
        and partner.event_types is None
        and partner.attributes_allowlist is None
    )


def kit_config(sessions: SessionConfig, timeout_s: float) -> SessionConfig:
    """The rules a partner kit with its own fixed timeout applies (no app or SDK overrides)."""
    return replace(
        sessions, session_timeout_s=timeout_s, app_session_timeout_s={}, honor_event_timeout=False
    )


# A profile's routing: its rules, the partners taking its records as they are, the others.
_Step = tuple[SessionRules, tuple[str, ...], tuple[Partner, ...]]


class Processor:
    """Applies events to a device's states (one per profile) and routes what they emit."""

    def __init__(self, sessions: SessionConfig, partners: Iterable[Partner]) -> None:
        partners = tuple(partners)
        own = tuple(p for p in partners if p.session_timeout_s is None)
        profiles = [Profile(SessionRules(sessions), own, is_pipeline=True)]
        timeouts = sorted({p.session_timeout_s for p in partners if p.session_timeout_s})
        for timeout in timeouts:
            kit = kit_config(sessions, timeout)
            members = tuple(p for p in partners if p.session_timeout_s == timeout)
            profiles.append(Profile(SessionRules(kit), members, is_pipeline=False))
        self.profiles: tuple[Profile, ...] = tuple(profiles)
        self.partners = partners
        self._scratch: list[Record] = []
        first, *kits = profiles
        self._rules = first.rules
        self._formatted = first.formatted  # partners of the pipeline's run that need formatting
        self._kits: tuple[_Step, ...] = tuple((k.rules, k.verbatim, k.formatted) for k in kits)
        self._simple = not self._formatted and not self._kits

    @property
    def only_rules(self) -> SessionRules | None:
        """The pipeline's rules when they are all there is to run (no partner to format, no
        partner kit): callers on the hot path then call them directly, one call less per
        event (`apply` is the same as `only_rules.apply(states[0], event, records, in_place=True)`
        then)."""
        return self._rules if self._simple else None

    def new_outputs(self) -> Outputs:
        """An empty Outputs with a list per partner."""
        verbatim = self.profiles[0].verbatim
        return Outputs(
            partners={p.name: [] for p in self.partners if p.name not in verbatim},
            verbatim=verbatim,
        )

    def new_states(self, app_id: str, device_id: str) -> list[DeviceState]:
        """States of a device never seen before, one per profile."""
        return [DeviceState(app_id, device_id) for _ in self.profiles]

    def apply(self, states: list[DeviceState], event: Record, out: Outputs) -> Applied:
        """Apply a valid event under every profile; the pipeline's verdict is returned.

        `event` is handed over: it becomes the pipeline's enriched record (not a copy of it),
        so the caller must not use or change it afterwards.
        """
        records = out.pipeline_records
        if self._simple:  # the common case: nothing to format, no partner kit
            return self._rules.apply(states[0], event, records, in_place=True)
        start = len(records)
        verdict = self._rules.apply(states[0], event, records, in_place=True)
        self._route(states, out, start, lambda rules, state, into: rules.apply(state, event, into))
        return verdict

    def expire(self, states: list[DeviceState], now_ts: int, out: Outputs) -> None:
        """Close every profile's session whose deadline is at or before event time `now_ts`."""
        start = len(out.pipeline_records)
        self._rules.expire(states[0], now_ts, out.pipeline_records)
        self._route(states, out, start, lambda rules, st, into: rules.expire(st, now_ts, into))

    def close_at_end(self, states: list[DeviceState], out: Outputs) -> None:
        """End of input: close every open session."""
        start = len(out.pipeline_records)
        self._rules.close_at_end(states[0], out.pipeline_records)
        self._route(states, out, start, lambda rules, state, into: rules.close_at_end(state, into))

    def deadline(self, states: list[DeviceState]) -> int | None:
        """The earliest deadline over the profiles (None: no session open anywhere)."""
        if not self._kits:
            return self._rules.deadline(states[0])
        deadlines = [
            d
            for profile, state in zip(self.profiles, states, strict=True)
            if (d := profile.rules.deadline(state)) is not None
        ]
        return min(deadlines, default=None)

    def _route(self, states: list[DeviceState], out: Outputs, start: int, run: _Run) -> None:
        """Format the pipeline's new records (from `start`) for its partners, then run the
        partner kits' own rules (`run`) and route what they emit."""
        self._format(self._formatted, out.pipeline_records, start, out)
        emitted = self._scratch
        for index, (rules, verbatim, formatted) in enumerate(self._kits, start=1):
            run(rules, states[index], emitted)
            if not emitted:
                continue
            for name in verbatim:
                out.partners[name].extend(emitted)
            self._format(formatted, emitted, 0, out)
            emitted.clear()

    @staticmethod
    def _format(
        partners: tuple[Partner, ...], emitted: list[Record], start: int, out: Outputs
    ) -> None:
        if not partners or len(emitted) == start:
            return
        new = emitted[start:] if start else emitted
        lists = out.partners
        for partner in partners:
            records = lists[partner.name]
            translate = partner.unfiltered
            if translate is not None:  # no filter: its format's translate, one call less
                for record in new:
                    records += translate(record)
            else:
                for record in new:
                    records += partner_records(partner, record)


_Run = Callable[[SessionRules, DeviceState, list[Record]], object]
