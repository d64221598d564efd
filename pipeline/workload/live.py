"""Live traffic: the generated workload spread over a run of a few seconds on the wall clock,
as `sessionize produce --devices N --rate R --duration S` and the demo send it. Pure: planning
reads no clock and sends nothing (`pipeline.kafka.sending.produce_live` sends a plan).

The workload generator (`pipeline.workload.generator`) spreads the devices' first launches over a
day and draws their gaps against a 60 s session timeout and a 30 min idle timeout, so replaying
it in real time would show few devices and almost no session ending within a run. Stamping each
message with the moment it happens to be sent would keep the order but change every gap, and
with it which sessions time out. So live mode keeps each device's own timeline and only moves
where it starts:

1. Time warp (`TimeWarp`): a device's gaps are scaled by configured session timeout / 60 s, and
   the `session_timeout_s` some SDKs send is scaled alike, so a gap within (past) the timeout in
   the workload is within (past) the timeout the worker applies, exactly, in integer ms. A gap
   longer than the idle timeout + 1 s is cut to that: past it, any gap closes a session the same
   way. With the default config (60 s) the warp is 1, real time. When the configured idle timeout
   is not 30 x the session timeout (as in the demo), a long foreground pause may end in `idle`
   where the workload meant a quiet read or a crash followed by a force quit.
2. Device starts (`plan_live`): devices start one after another, in the generator's order, a
   stagger apart; the stagger is solved so that the events due within the duration come to
   about rate x duration. When the devices are too few for the rate, they all start within the
   first second and the closing summary shows the rate they gave.
3. Sending (`LivePlan.stamp`): a message is sent when the wall clock reaches its newest event's
   warped time (a message without a readable event goes with its device's previous one), and
   its event times are rewritten to run start + warped time, so event time = send time.
   Timestamps that are bad on purpose (before 2000, or not a number) are left alone, so they are
   still dead-lettered; a retried event keeps its first (warped) time, as an SDK retry does.

The workload is generated up front (about 45 messages per device held in memory); for millions
of devices write a file with `sessionize generate` and send it with `produce --input`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from pipeline.engine import SessionConfig
from pipeline.vocabulary import MAX_SESSION_TIMEOUT_S, MIN_SESSION_TIMEOUT_S, MIN_TS_MS
from pipeline.workload.generator import generate_keyed_messages
from pipeline.workload.spec import DEFAULT_TIMEOUT_MS, WorkloadSpec


@dataclass(frozen=True, slots=True)
class TimeWarp:
    """Maps the workload's gaps onto the wall clock of a live run (see the module docstring)."""

    session_timeout_ms: int  # what the workload's 60 s timeout becomes
    max_gap_ms: int  # longer gaps are cut to this

    @classmethod
    def for_sessions(cls, sessions: SessionConfig) -> TimeWarp:
        """The warp for the pipeline's configured timeouts."""
        timeout_ms = round(sessions.session_timeout_s * 1000)
        idle_ms = round(sessions.idle_timeout_s * 1000)
        return cls(timeout_ms, max(timeout_ms, idle_ms) + 1000)

    def gap(self, workload_gap_ms: int) -> int:
        """A device's gap in wall ms; within the timeout if and only if it was in the workload."""
        scaled = workload_gap_ms * self.session_timeout_ms // DEFAULT_TIMEOUT_MS
        return min(scaled, self.max_gap_ms)

    def timeout_s(self, workload_timeout_s: float) -> float:
        """An SDK's `session_timeout_s`, scaled like the gaps (at least 1 s, the spec's minimum)."""
        scaled = workload_timeout_s * self.session_timeout_ms / DEFAULT_TIMEOUT_MS
        return max(float(MIN_SESSION_TIMEOUT_S), scaled)


class DeviceClock:
    """One device in a live run: when it starts, and each of its event times, warped."""

    __slots__ = ("offsets", "start_ms")

    def __init__(self, event_times: Iterable[int], warp: TimeWarp) -> None:
        times = sorted(set(event_times))
        self.offsets: dict[int, int] = {}
        offset = 0
        for previous, current in itertools.pairwise([*times[:1], *times]):
            offset += warp.gap(current - previous)
            self.offsets[current] = offset
        self.start_ms = 0

    def offset(self, ts: int) -> int:
        """Wall ms after the run starts at which event time `ts` of this device happens."""
        return self.start_ms + self.offsets[ts]


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """A generated message with its place in a live run."""

    send_ms: int  # ms after the run starts
    key: bytes | None
    value: bytes  # as generated; `LivePlan.stamp` gives the bytes to send
    events: int
    clock: DeviceClock | None


@dataclass(slots=True)
class LivePlan:
    """The messages of a live run, in send order, and how they were spread."""

    messages: list[LiveMessage]
    warp: TimeWarp
    duration_ms: int
    devices: int  # devices that send within the run
    best_rate: float  # events/s these devices give at most (all starting at once)

    def stamp(self, message: LiveMessage, run_start_ms: int) -> bytes:
        """The message to send: its event times moved to the run's wall clock."""
        if message.clock is None:
            return message.value
        parsed = _loads(message.value)
        bodies = _event_bodies(parsed)
        if not bodies:
            return message.value
        for body in bodies:
            ts = body.get("ts")
            if _is_event_time(ts):
                body["ts"] = run_start_ms + message.clock.offset(ts)
            timeout = body.get("session_timeout_s")
            if _is_timeout(timeout):
                body["session_timeout_s"] = self.warp.timeout_s(timeout)
        return orjson.dumps(parsed)


def _loads(message: bytes) -> Any:
    try:
        return orjson.loads(message)
    except orjson.JSONDecodeError:
        return None


def _event_bodies(parsed: Any) -> list[dict[str, Any]]:
    if not isinstance(parsed, dict):
        return []
    events = parsed.get("events")
    if isinstance(events, list):
        return [event for event in events if isinstance(event, dict)]
    return [parsed]


def _is_timeout(value: Any) -> TypeGuard[float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and MIN_SESSION_TIMEOUT_S <= value <= MAX_SESSION_TIMEOUT_S
    )


def _is_event_time(ts: Any) -> TypeGuard[int]:
    return isinstance(ts, int) and not isinstance(ts, bool) and ts >= MIN_TS_MS


@dataclass(slots=True)
class _Generated:
    device: int  # -1: before any device (a bad message of nobody)
    key: bytes | None
    value: bytes
    events: int
    newest_ts: int | None


def plan_live(spec: WorkloadSpec, warp: TimeWarp, rate: float, duration_s: float) -> LivePlan:
    """Spread the workload's devices over a live run of `duration_s` at about `rate` events/s."""
    generated: list[_Generated] = []
    device_of: dict[bytes, int] = {}
    event_times: list[list[int]] = []
    device = -1
    for key, value in generate_keyed_messages(spec):
        bodies = _event_bodies(_loads(value))
        times = [body["ts"] for body in bodies if _is_event_time(body.get("ts"))]
        if key is not None:  # a keyless message is garbage inside the previous device's upload
            device = device_of.setdefault(key, len(device_of))
            if device == len(event_times):
                event_times.append([])
        if device >= 0:
            event_times[device].extend(times)
        generated.append(
            _Generated(device, key, value, max(len(bodies), 1), max(times, default=None))
        )
    clocks = [DeviceClock(times, warp) for times in event_times]

    # Each message's offset from its device's start: never going back, so the order is kept.
    schedules: list[list[tuple[int, int]]] = [[] for _ in clocks]
    offsets: list[int] = []
    for message in generated:
        if message.device < 0:
            offsets.append(0)
            continue
        schedule = schedules[message.device]
        previous = schedule[-1][0] if schedule else 0
        clock = clocks[message.device]
        own = clock.offsets[message.newest_ts] if message.newest_ts else previous
        schedule.append((max(previous, own), message.events))
        offsets.append(schedule[-1][0])

    duration_ms = round(duration_s * 1000)
    starts = _device_starts(schedules, rate, duration_ms)
    planned: list[tuple[int, int, LiveMessage]] = []
    for order, (message, offset) in enumerate(zip(generated, offsets, strict=True)):
        start = starts[message.device] if message.device >= 0 else 0
        if start is None or start + offset >= duration_ms:
            continue
        sender = clocks[message.device] if message.device >= 0 else None
        if sender is not None:
            sender.start_ms = start
        live = LiveMessage(start + offset, message.key, message.value, message.events, sender)
        planned.append((start + offset, order, live))
    planned.sort(key=lambda item: (item[0], item[1]))
    all_at_once = sum(
        events for schedule in schedules for offset, events in schedule if offset < duration_ms
    )
    return LivePlan(
        messages=[item[2] for item in planned],
        warp=warp,
        duration_ms=duration_ms,
        devices=sum(start is not None for start in starts),
        best_rate=all_at_once * 1000 / duration_ms if duration_ms else 0.0,
    )


_BUDGET_BINS = 240  # the rate is kept per 1/240 of the run (1/8 s for 30 s) ...
_MIN_BIN_MS = 125  # ... or per 1/8 s, whichever is longer


def _device_starts(
    schedules: Sequence[Sequence[tuple[int, int]]], rate: float, duration_ms: int
) -> list[int | None]:
    """When each device starts (None: not within the run).

    Devices start in order, each as early as it can, at most one per 1/rate s, provided the
    events due by the end of every bin (1/240 of the run) stay within rate x the time elapsed.
    So many devices launch in the first seconds, then new ones arrive as the early ones quieten
    down, and the rate stays about flat.
    """
    bin_ms = max(_MIN_BIN_MS, -(-duration_ms // _BUDGET_BINS))
    bins = max(1, -(-duration_ms // bin_ms))
    budget = [rate * (index + 1) * bin_ms / 1000 for index in range(bins)]
    due = [0] * bins  # events due by the end of each bin, cumulative
    spacing = 1000 / rate
    retry_step = max(spacing, bin_ms / 4)
    starts: list[int | None] = [None] * len(schedules)
    start = 0.0
    for device, schedule in enumerate(schedules):
        while start < duration_ms:
            added = _due_by_bin(schedule, round(start), duration_ms, bin_ms, bins)
            if all(
                before + more <= limit
                for before, more, limit in zip(due, added, budget, strict=True)
            ):
                break
            start += retry_step
        else:
            break  # the run is full: the remaining devices do not start
        starts[device] = round(start)
        due = [before + more for before, more in zip(due, added, strict=True)]
        start += spacing
    return starts


def _due_by_bin(
    schedule: Sequence[tuple[int, int]], start: int, duration_ms: int, bin_ms: int, bins: int
) -> list[int]:
    """Cumulative events of one device due by the end of each bin, if it starts at `start`."""
    counts = [0] * bins
    for offset, events in schedule:
        at = start + offset
        if at >= duration_ms:
            break
        counts[at // bin_ms] += events
    return list(itertools.accumulate(counts))
