"""A picture of sessions: a few devices' lifecycle events and sessions on one time axis.

`render_timeline(records)` turns canonical records (session_start, session_end and enriched
events, SPEC section 4) into one self-contained HTML page with an inline SVG: no scripts, no
external files. Each device is a lane: its sessions are bars labelled with the session number
and end reason, its events marks underneath, one shape and colour per event type. Pure: the same
records give the same page.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pipeline.vocabulary import (
    APP_BACKGROUND,
    APP_FOREGROUND,
    APP_LAUNCH,
    APP_TERMINATE,
    COMMERCE_EVENT,
    CUSTOM_EVENT,
    END_FORCE_QUIT,
    END_IDLE,
    END_TERMINATE,
    END_TIMEOUT,
    SCREEN_VIEW,
    SESSION_ATTRIBUTE,
    SESSION_END,
    SESSION_START,
)

# Event marks: (shape, colour, legend label), drawn in this order in the legend.
MARKS: Final[dict[str, tuple[str, str, str]]] = {
    APP_LAUNCH: ("triangle-up", "#1b9e3e", "app_launch"),
    APP_FOREGROUND: ("circle", "#1f6fd1", "app_foreground"),
    APP_BACKGROUND: ("triangle-down", "#e07b00", "app_background"),
    APP_TERMINATE: ("square", "#d62728", "app_terminate"),
    SCREEN_VIEW: ("tick", "#8a8f98", "screen_view"),
    CUSTOM_EVENT: ("dot", "#5b6170", "custom_event"),
    COMMERCE_EVENT: ("diamond", "#b8860b", "commerce_event"),
    SESSION_ATTRIBUTE: ("tick", "#9b59b6", "session_attribute"),
}
_OTHER_MARK: Final = ("dot", "#b0b4bb", "other")

# Session bars by end reason: (fill, stroke).
BARS: Final[dict[str, tuple[str, str]]] = {
    END_TIMEOUT: ("#dbe9fb", "#1f6fd1"),
    END_TERMINATE: ("#dcf3e2", "#1b9e3e"),
    END_FORCE_QUIT: ("#fde2e1", "#d62728"),
    END_IDLE: ("#efe3f7", "#8e44ad"),
    "open": ("#f1f2f4", "#8a8f98"),
}

_WIDTH: Final = 1320
_LEFT: Final = 190  # device labels
_RIGHT: Final = 30
_TOP: Final = 86  # legend and axis labels
_LANE: Final = 74
_BAR_Y: Final = 10  # within a lane
_BAR_HEIGHT: Final = 26
_MARK_Y: Final = 54
_CHAR_PX: Final = 7.2  # width of a 12 px character (a wide font), for fitting labels
_NICE_STEPS_S: Final = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


@dataclass(slots=True)
class _Session:
    number: int
    start_ts: int
    end_ts: int | None = None
    end_reason: str | None = None
    event_count: int | None = None


@dataclass(slots=True)
class _Device:
    app_id: str
    device_id: str
    sessions: dict[str, _Session] = field(default_factory=dict)
    events: list[tuple[int, str, str, str]] = field(default_factory=list)  # ts, type, name, session

    def score(self) -> tuple[int, int, int]:
        reasons = {s.end_reason for s in self.sessions.values() if s.end_reason}
        ended = sum(s.end_reason is not None for s in self.sessions.values())
        return len(reasons), min(ended, 6), len(self.events)


def render_timeline(
    records: Iterable[Mapping[str, Any]],
    *,
    devices: int = 6,
    title: str = "Session timeline",
    subtitle: str = "",
) -> str:
    """The HTML page: the `devices` devices with the most varied sessions, on one time axis.

    Devices are picked by how many different end reasons their sessions have, then how many
    sessions ended, then how many events they sent; ties by device id, so the pick is stable.
    """
    lanes = _pick(_devices(records), devices)
    body = _svg(lanes) if lanes else "<p>No sessions to draw.</p>"
    caption = f"<p class='sub'>{html.escape(subtitle)}</p>" if subtitle else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{caption}\n{body}\n</body>\n</html>\n"
    )


_CSS: Final = (
    "body{font-family:'DejaVu Sans','Segoe UI',Roboto,Helvetica,Arial,sans-serif;"
    "margin:24px;color:#1d2230;background:#fff}"
    "h1{font-size:22px;margin:0 0 4px}.sub{margin:0 0 12px;color:#555;font-size:14px}"
    "svg text{font-family:inherit}"
)


def _devices(records: Iterable[Mapping[str, Any]]) -> list[_Device]:
    found: dict[tuple[str, str], _Device] = {}
    for record in records:
        key = (str(record.get("app_id")), str(record.get("device_id")))
        device = found.get(key)
        if device is None:
            device = found[key] = _Device(*key)
        kind = record.get("type")
        session_id = str(record.get("session_id"))
        if kind == SESSION_START:
            session = device.sessions.setdefault(
                session_id, _Session(record["session_number"], record["start_ts"])
            )
        elif kind == SESSION_END:
            session = device.sessions.setdefault(
                session_id, _Session(record["session_number"], record["start_ts"])
            )
            session.end_ts = record["end_ts"]
            session.end_reason = record["end_reason"]
            session.event_count = record.get("event_count")
        elif isinstance(record.get("ts"), int):
            name = str(record.get("name") or "")
            device.events.append((record["ts"], str(kind), name, session_id))
    return list(found.values())


def _pick(devices: list[_Device], count: int) -> list[_Device]:
    with_sessions = [d for d in devices if d.sessions]
    ranked = sorted(with_sessions, key=lambda d: (d.device_id, d.app_id))
    ranked.sort(key=_Device.score, reverse=True)
    return sorted(ranked[:count], key=lambda d: (_first_ts(d), d.device_id))


def _first_ts(device: _Device) -> int:
    starts = [s.start_ts for s in device.sessions.values()]
    return min(starts + [event[0] for event in device.events])


def _last_ts(device: _Device) -> int:
    ends = [s.end_ts or s.start_ts for s in device.sessions.values()]
    return max(ends + [event[0] for event in device.events])


@dataclass(frozen=True, slots=True)
class _Axis:
    start_ts: int
    end_ts: int

    def x(self, ts: int) -> float:
        span = max(self.end_ts - self.start_ts, 1)
        return _LEFT + (ts - self.start_ts) / span * (_WIDTH - _LEFT - _RIGHT)

    def ticks(self) -> list[tuple[float, str]]:
        span_s = (self.end_ts - self.start_ts) / 1000
        step = next((s for s in _NICE_STEPS_S if span_s / s <= 14), _NICE_STEPS_S[-1])
        ticks = []
        for index in range(int(span_s / step) + 1):
            seconds = index * step
            label = f"{seconds:g} s" if step < 60 else f"{seconds / 60:g} min"
            ticks.append((self.x(self.start_ts + round(seconds * 1000)), label))
        return ticks


def _svg(lanes: list[_Device]) -> str:
    first = min(_first_ts(d) for d in lanes)
    last = max(_last_ts(d) for d in lanes)
    padding = max((last - first) // 50, 200)
    axis = _Axis(first - padding, last + padding)
    height = _TOP + _LANE * len(lanes) + 40
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{height}' "
        f"viewBox='0 0 {_WIDTH} {height}' role='img' aria-label='session timeline'>",
        f"<rect width='{_WIDTH}' height='{height}' fill='#ffffff'/>",
        *_legend(),
        *_grid(axis, height),
    ]
    for index, device in enumerate(lanes):
        parts.extend(_lane(device, axis, _TOP + index * _LANE, index))
    start_clock = datetime.fromtimestamp(axis.start_ts / 1000, UTC).strftime("%H:%M:%S UTC")
    parts.append(
        f"<text x='{_LEFT}' y='{height - 10}' font-size='12' fill='#555'>"
        f"time since {start_clock} (event time)</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _legend() -> list[str]:
    parts = []
    x = 12.0
    for shape, colour, label in MARKS.values():
        parts.append(_mark(shape, colour, x + 6, 20))
        parts.append(f"<text x='{x + 16:.1f}' y='24' font-size='12'>{label}</text>")
        x += 30 + _text_width(label)
    x = 12.0
    for reason, (fill, stroke) in BARS.items():
        parts.append(
            f"<rect x='{x:.1f}' y='36' width='26' height='14' rx='3' fill='{fill}' "
            f"stroke='{stroke}' stroke-width='1.5'{_dash(reason)}/>"
        )
        label = "still open" if reason == "open" else f"session ended: {reason}"
        parts.append(f"<text x='{x + 32:.1f}' y='47' font-size='12'>{label}</text>")
        x += 52 + _text_width(label)
    return parts


def _grid(axis: _Axis, height: int) -> list[str]:
    parts = []
    for x, label in axis.ticks():
        parts.append(
            f"<line x1='{x:.1f}' y1='{_TOP - 8}' x2='{x:.1f}' y2='{height - 28}' "
            "stroke='#e6e8ec' stroke-width='1'/>"
        )
        parts.append(
            f"<text x='{x:.1f}' y='{_TOP - 12}' font-size='11' fill='#666' "
            f"text-anchor='middle'>{label}</text>"
        )
    return parts


def _lane(device: _Device, axis: _Axis, top: int, index: int) -> list[str]:
    parts = []
    if index % 2:
        parts.append(f"<rect x='0' y='{top}' width='{_WIDTH}' height='{_LANE}' fill='#fafbfc'/>")
    total = len(device.sessions)
    still_open = total - sum(s.end_reason is not None for s in device.sessions.values())
    summary = f"{total} sessions" + (f" ({still_open} open)" if still_open else "")
    parts.append(
        f"<text x='12' y='{top + 26}' font-size='13' font-weight='bold'>"
        f"{html.escape(_shorten(device.device_id, 24))}</text>"
    )
    parts.append(
        f"<text x='12' y='{top + 44}' font-size='11' fill='#666'>"
        f"{html.escape(_shorten(device.app_id, 16))} · {summary}</text>"
    )
    mark_y = top + _MARK_Y
    parts.append(
        f"<line x1='{_LEFT}' y1='{mark_y}' x2='{_WIDTH - _RIGHT}' y2='{mark_y}' "
        "stroke='#d5d8de' stroke-width='1'/>"
    )
    sessions = sorted(device.sessions.items(), key=lambda item: item[1].start_ts)
    for index, (session_id, session) in enumerate(sessions):
        following = sessions[index + 1][1].start_ts if index + 1 < len(sessions) else None
        room_until = axis.x(following) if following is not None else _WIDTH - 4
        parts.extend(_bar(session_id, session, device, axis, top + _BAR_Y, room_until))
    for ts, kind, name, _ in sorted(device.events):
        shape, colour, _ = MARKS.get(kind, _OTHER_MARK)
        tip = f"{kind} {name}".strip()
        parts.append(
            f"<g><title>{html.escape(tip)}</title>{_mark(shape, colour, axis.x(ts), mark_y)}</g>"
        )
    return parts


def _bar(
    session_id: str, session: _Session, device: _Device, axis: _Axis, y: int, room_until: float
) -> list[str]:
    """A session's bar; its label inside, else right of it when there is room, else none."""
    reason = session.end_reason or "open"
    fill, stroke = BARS.get(reason, BARS["open"])
    end_ts = session.end_ts
    if end_ts is None:  # still open: up to its last event
        own = [event[0] for event in device.events if event[3] == session_id]
        end_ts = max([session.start_ts, *own])
    x1 = axis.x(session.start_ts)
    width = max(axis.x(end_ts) - x1, 3.0)
    duration_s = (end_ts - session.start_ts) / 1000
    tip = f"session #{session.number}: {duration_s:.1f} s, {reason}"
    if session.event_count is not None:
        tip += f", {session.event_count} events"
    parts = [
        f"<g><title>{html.escape(tip)}</title>"
        f"<rect x='{x1:.1f}' y='{y}' width='{width:.1f}' height='{_BAR_HEIGHT}' rx='4' "
        f"fill='{fill}' stroke='{stroke}' stroke-width='1.5'{_dash(reason)}/></g>"
    ]
    text_y = y + _BAR_HEIGHT / 2 + 4
    full, short = f"#{session.number} {reason.replace('_', ' ')}", f"#{session.number}"
    inside = x1 + width / 2, "middle", width - 8
    outside = x1 + width + 4, "start", room_until - x1 - width - 8
    for label, (x, anchor, room) in itertools.product((full, short), (inside, outside)):
        if _text_width(label) <= room:
            parts.append(_label(x, text_y, label, anchor))
            break
    return parts


def _label(x: float, y: float, text: str, anchor: str) -> str:
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' font-size='12' text-anchor='{anchor}' "
        f"fill='#1d2230'>{html.escape(text)}</text>"
    )


def _text_width(text: str) -> float:
    return len(text) * _CHAR_PX


def _dash(reason: str) -> str:
    return " stroke-dasharray='4 3'" if reason == "open" else ""


def _mark(shape: str, colour: str, x: float, y: float) -> str:
    if shape == "triangle-up":
        points = f"{x:.1f},{y - 6:.1f} {x - 5.5:.1f},{y + 4:.1f} {x + 5.5:.1f},{y + 4:.1f}"
        return f"<polygon points='{points}' fill='{colour}'/>"
    if shape == "triangle-down":
        points = f"{x:.1f},{y + 6:.1f} {x - 5.5:.1f},{y - 4:.1f} {x + 5.5:.1f},{y - 4:.1f}"
        return f"<polygon points='{points}' fill='{colour}'/>"
    if shape == "circle":
        return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='5' fill='{colour}'/>"
    if shape == "square":
        return f"<rect x='{x - 5:.1f}' y='{y - 5:.1f}' width='10' height='10' fill='{colour}'/>"
    if shape == "diamond":
        points = f"{x:.1f},{y - 5:.1f} {x + 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x - 5:.1f},{y:.1f}"
        return f"<polygon points='{points}' fill='{colour}'/>"
    if shape == "tick":
        return (
            f"<line x1='{x:.1f}' y1='{y - 6:.1f}' x2='{x:.1f}' y2='{y + 6:.1f}' "
            f"stroke='{colour}' stroke-width='2'/>"
        )
    return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{colour}'/>"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
