"""A seeded synthetic workload of mobile SDK traffic, for tests, benchmarks and the demo.

A population of devices, each installed with one app, lives through app lifecycles:
`app_launch`, a stretch of screen views, custom and commerce events and session attribute
changes, `app_background`, then one of: a resume within the session timeout, a resume past it
(a new session by SPEC section 3), an `app_terminate`, a force quit (a new `app_launch` while the
session is still open), a crash in the foreground, a foreground idle past `idle_timeout`, or a
long idle before the next launch. Gaps after a background event straddle the timeout (exactly
`timeout - 1`, `timeout` and `timeout + 1` ms happen), users log in part way through a session
and occasionally change, a few devices carry their SDK's `session_timeout_s` on every event,
and background tasks sometimes log events while the app is backgrounded.

On top of that the SDK noise: a share of events is sent again in the device's next upload (same
event_id and content, so dedup by the engine is exercised, terminate retries included), and a
share of messages is bad (garbage bytes, truncated JSON, a JSON array, a batch whose `events` is
not an array, a missing field, `ts` as a string, an unknown `type`, a non-numeric increment, `ts`
before 2000, an increment of an attribute holding text). Bad messages never affect sessions; a bad
event's id is `<device_id>-bad-<n>`, never the id of a valid event.

Uploads: events are uploaded in batches of one device (`batch_size`), flushed when the app
backgrounds or terminates, before a launch and before a resume that starts a new session (so a
batch never spans a session boundary and a retry always lands in the session it repeats or the
one right after it); `batch_size=1` gives one plain event per message. Messages of all devices
are merged in arrival order (upload time = last event's ts + a short delay), each device's
messages in its own order.

Everything is a pure function of the `WorkloadSpec`: the same spec gives byte-identical output.
Each device draws from its own `random.Random`, and the duplicate and bad-message decisions
consume the same draws whatever the rates, so a device's valid events do not depend on
`duplicate_rate`, `bad_rate` or `batch_size`. Gaps are chosen against the default session
timeout (60 s, or the device's own `session_timeout_s`) and idle timeout (1800 s).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from random import Random
from typing import Any, BinaryIO, Final

import orjson

from pipeline.vocabulary import DEFAULT_SESSION_TIMEOUT_S, MIN_TS_MS

DEFAULT_TIMEOUT_MS: Final = round(DEFAULT_SESSION_TIMEOUT_S * 1000)
IDLE_TIMEOUT_MS: Final = 1_800_000
START_WINDOW_MS: Final = 86_400_000  # device first launches are spread over one day
MAX_UPLOAD_DELAY_MS: Final = 2_000  # an upload arrives within this long of its last event
_BUCKET_MS: Final = 60_000  # the merge sorts arrivals one minute at a time

BAD_KINDS: Final = (
    "garbage_bytes",
    "truncated_json",
    "json_array",
    "batch_events_not_array",
    "missing_field",
    "ts_as_string",
    "unknown_type",
    "increment_not_numeric",
    "ts_before_2000",
    "attribute_not_numeric",
)

# Entry kinds of an upload: a valid event, its retry, a bad event, a raw bad message.
_VALID: Final = 0
_RETRY: Final = 1
_BAD_EVENT: Final = 2
_BAD_RAW: Final = 3

_SEED_STRIDE: Final = 1 << 32
_REQUIRED: Final = ("event_id", "app_id", "device_id", "type", "ts")
_CUSTOM_TIMEOUTS_S: Final = (30, 120)

_SCREENS: Final = (
    "home",
    "feed",
    "search",
    "product",
    "cart",
    "checkout",
    "profile",
    "settings",
    "level_select",
    "game",
)
_CUSTOM_EVENTS: Final = (
    "button_tap",
    "share",
    "like",
    "search",
    "add_to_wishlist",
    "tutorial_step",
    "level_complete",
    "video_play",
)
_BACKGROUND_EVENTS: Final = ("background_sync", "location_update", "push_received")
_COMMERCE_EVENTS: Final = ("add_to_cart", "remove_from_cart", "checkout", "purchase")
_PRICES: Final = (0.99, 2.49, 4.99, 9.99, 19.99, 49.0)
_PLANS: Final = ("free", "pro", "team")


class _Absent:
    """The user_id of an event that omits the field (as opposed to sending null)."""

    __slots__ = ()


_ABSENT: Final = _Absent()

# (kind, user or field or key, body): see _Device.emit and _render_*.
_Entry = tuple[int, Any, Any]
_Upload = tuple[int, list[_Entry]]
# A rendered output with its arrival time first: (arrival, event) or (arrival, key, message).
_Row = tuple[Any, ...]
_Render = Callable[["_Device", int, list[_Entry]], list[_Row]]
_arrival: Final = itemgetter(0)


@dataclass(frozen=True)
class WorkloadSpec:
    """What to generate; the same spec always gives the same bytes.

    Devices first launch at times spread over the day after `start_ms` and live for minutes
    to many hours. `events_per_device` is a mean (each device draws 0.5x to 1.5x of it, then
    ends its lifecycle). `duplicate_rate` is the share of valid events sent a second time,
    `bad_rate` the number of bad messages per valid event. `batch_size` is the largest number
    of fresh events in one upload (retries of the previous upload come on top); 1 means plain
    single-event messages.
    """

    devices: int = 1000
    apps: int = 3
    seed: int = 0
    start_ms: int = 1_790_000_000_000
    events_per_device: int = 40
    duplicate_rate: float = 0.01
    bad_rate: float = 0.001
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.devices < 0 or self.apps < 1 or self.events_per_device < 1:
            raise ValueError("devices must be >= 0, apps and events_per_device >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not (0.0 <= self.duplicate_rate <= 1.0 and 0.0 <= self.bad_rate <= 1.0):
            raise ValueError("duplicate_rate and bad_rate must be within [0, 1]")
        if self.start_ms < MIN_TS_MS:
            raise ValueError("start_ms must not be before 2000-01-01")


def generate_events(spec: WorkloadSpec) -> Iterator[dict[str, Any]]:
    """The valid events of the workload in arrival order, retried duplicates included.

    Each is a full event (event_id, app_id, device_id, type, ts, optional fields), exactly what
    the valid messages of `generate_messages` hold once batch fields are inherited. A device's
    events are in its own order with non-decreasing `ts`, except that a retry repeats an earlier
    event (same content, original `ts`) at the start of the device's next upload.
    """
    for bucket in _merged(spec, _render_events):
        for row in bucket:
            yield row[1]


def generate_keyed_messages(spec: WorkloadSpec) -> Iterator[tuple[bytes | None, bytes]]:
    """The messages with their Kafka key: the device_id bytes, or None for garbage bytes."""
    for bucket in _merged(spec, _message_renderer(spec)):
        for row in bucket:
            yield row[1], row[2]


def generate_messages(spec: WorkloadSpec) -> Iterator[bytes]:
    """The messages as produced to Kafka or written as JSONL lines (no trailing newline).

    Single events or batches serialized with orjson, bad messages mixed in; never contains a
    newline byte, so a message is always exactly one line.
    """
    for bucket in _merged(spec, _message_renderer(spec)):
        for row in bucket:
            yield row[2]


def write_jsonl(spec: WorkloadSpec, path: Path) -> int:
    """Write the messages to `path`, one per line, and return the number of lines."""
    lines = 0
    chunk: list[bytes] = []
    with path.open("wb") as out:
        for message in generate_messages(spec):
            chunk.append(message)
            if len(chunk) == 10_000:
                lines += _write_lines(out, chunk)
        lines += _write_lines(out, chunk)
    return lines


def _write_lines(out: BinaryIO, chunk: list[bytes]) -> int:
    if chunk:
        out.write(b"\n".join(chunk))
        out.write(b"\n")
    count = len(chunk)
    chunk.clear()
    return count


def _merged(spec: WorkloadSpec, render: _Render) -> Iterator[list[_Row]]:
    """Every device's rendered uploads as rows, in arrival order.

    Yields one time bucket at a time. Devices are simulated in index order and a device's rows
    are appended in its own order, so the stable sort by arrival alone orders ties by device,
    then by position. A device is simulated only when the merge nears its first
    launch, so memory holds the output of the devices active at the moment, not the workload.
    """
    buckets: dict[int, list[_Row]] = {}
    pending: list[int] = []  # heap of the bucket numbers in `buckets`
    devices = spec.devices
    next_index = 0
    while True:
        # Every upload of device i arrives at or after _earliest_start(i), which grows with i.
        next_bucket = (
            _earliest_start(spec, next_index) // _BUCKET_MS if next_index < devices else -1
        )
        if pending and (next_bucket < 0 or pending[0] < next_bucket):
            bucket = buckets.pop(heapq.heappop(pending))
            bucket.sort(key=_arrival)
            yield bucket
            continue
        if next_bucket < 0:
            return
        device = _Device(spec, next_index)
        for arrival, entries in device.run():
            number = arrival // _BUCKET_MS
            rows = buckets.get(number)
            if rows is None:
                rows = buckets[number] = []
                heapq.heappush(pending, number)
            rows.extend(render(device, arrival, entries))
        next_index += 1


def _earliest_start(spec: WorkloadSpec, index: int) -> int:
    return spec.start_ms + index * START_WINDOW_MS // spec.devices


class _Device:
    """One device's whole life, simulated at once from its own seeded generator."""

    __slots__ = (
        "app_id",
        "bad_floor",
        "batch_size",
        "custom_timeout_s",
        "device_id",
        "duplicate_rate",
        "entries",
        "events",
        "fresh",
        "index",
        "key",
        "last_arrival",
        "plan_is_text",
        "rand",
        "retries_next",
        "retries_now",
        "sends_null_user",
        "spec",
        "target_events",
        "timeout_ms",
        "ts",
        "uploads",
        "user",
        "user_count",
        "user_field",
    )

    def __init__(self, spec: WorkloadSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        rng = Random(spec.seed * _SEED_STRIDE + index)
        self.rand = rng.random
        rand = self.rand
        self.device_id = f"dev-{index:06d}"
        self.key = self.device_id.encode()
        popularity = rand()  # products only, no pow(): the same bits on every platform
        self.app_id = f"app-{1 + int(popularity * (popularity + 1) / 2 * spec.apps)}"
        slot = rand() * START_WINDOW_MS
        self.ts = spec.start_ms + int((index * START_WINDOW_MS + slot) // spec.devices)
        custom = rand()
        self.custom_timeout_s = _CUSTOM_TIMEOUTS_S[int(custom * 66) % 2] if custom < 0.03 else None
        self.timeout_ms = (self.custom_timeout_s or DEFAULT_TIMEOUT_MS // 1000) * 1000
        self.user_count = 0
        self.user: str | None = None
        self.user_field: Any = None  # what events carry as user_id: a str, None or _ABSENT
        logged_in = rand() < 0.35
        self.sends_null_user = rand() < 0.5
        self.set_user(logged_in)
        self.target_events = max(1, int(spec.events_per_device * (0.5 + rand()) - 1))
        self.events = 0
        self.plan_is_text = False  # the open session holds a text "plan" (for a bad increment)
        self.duplicate_rate = spec.duplicate_rate
        self.bad_floor = 1.0 - spec.bad_rate if spec.bad_rate > 0.0 else 2.0
        self.batch_size = spec.batch_size
        self.entries: list[_Entry] = []
        self.fresh = 0  # valid, non-retry entries in the current upload
        self.retries_now: list[_Entry] = []  # retries of this upload's events: sent next time
        self.retries_next: list[_Entry] = []  # retries that go at the start of this upload
        self.uploads: list[_Upload] = []
        self.last_arrival = 0

    def set_user(self, logged_in: bool) -> None:
        """Log the next user in (the device's first user, then "user-000042-2" and so on)."""
        if logged_in:
            self.user_count += 1
            base = f"user-{self.index:06d}"
            self.user = base if self.user_count == 1 else f"{base}-{self.user_count}"
        self.user_field = self.user
        if self.user is None and not self.sends_null_user:
            self.user_field = _ABSENT

    def run(self) -> list[_Upload]:
        """Simulate the device's lifecycles until its event budget is spent."""
        rand = self.rand
        timeout = self.timeout_ms
        self.launch(0)
        while True:
            self.foreground_stretch()
            done = self.events >= self.target_events
            outcome = rand()
            gap = rand()
            if outcome < 0.03:  # crash in the foreground: the next launch is a force quit
                if done:
                    break
                self.launch(IDLE_TIMEOUT_MS - 1 if gap < 0.1 else 5_000 + int(gap * 600_000))
                continue
            if outcome < 0.05:  # left open in the foreground: idle timeout, then a launch
                if done:
                    break
                idle = IDLE_TIMEOUT_MS if gap < 0.3 else IDLE_TIMEOUT_MS + int(gap * 10_800_000)
                self.launch(idle)
                continue
            self.event("app_background", 200 + int(gap * 4_800))
            self.flush()
            if rand() < 0.06:  # a background task logs while backgrounded
                self.background_task(rand())
            if done:
                if rand() < 0.35:
                    self.event("app_terminate", int(rand() * 2_000))
                break
            resume = rand()
            gap = rand()
            if resume < 0.42:  # back within the timeout: same session
                within = timeout - 1 if gap < 0.12 else 1_000 + int(gap * (timeout - 1_001))
                self.foreground(within, new_session=False)
            elif resume < 0.60:  # back past the timeout: a new session
                if gap < 0.15:
                    past = timeout
                elif gap < 0.3:
                    past = timeout + 1
                else:
                    past = timeout + int((gap - 0.3) * (gap - 0.3) * 22_000_000)
                self.foreground(past, new_session=True)
            elif resume < 0.78:  # terminated, launched again later
                self.event("app_terminate", int(gap * 2_000))
                self.plan_is_text = False
                self.flush()
                later = rand()
                self.launch(20_000 + int(later * later * 21_600_000))
            elif resume < 0.90:  # killed in the background: launch while the session is open
                self.launch(timeout - 1 if gap < 0.1 else 1_000 + int(gap * (timeout - 1_001)))
            else:  # idle: the session times out, a later launch opens the next one
                self.launch(timeout if gap < 0.1 else 1_800_000 + int(gap * 41_400_000))
        self.flush()
        if self.retries_next:
            self.flush()
        return self.uploads

    def launch(self, gap: int) -> None:
        """An app_launch `gap` ms after the last event: always the start of a new upload."""
        self.flush()
        self.plan_is_text = False
        self.event("app_launch", gap)

    def foreground(self, gap: int, new_session: bool) -> None:
        """An app_foreground; one past the timeout starts a new session, so a new upload."""
        if new_session:
            self.flush()
            self.plan_is_text = False
        self.event("app_foreground", gap)

    def background_task(self, draw: float) -> None:
        """One or two events logged while backgrounded, well within the timeout."""
        step = min(20_000, self.timeout_ms // 3)
        for repeat in range(1 + int(draw * 3) // 2):
            name = _BACKGROUND_EVENTS[int(draw * 30 + repeat) % len(_BACKGROUND_EVENTS)]
            body = self.body("custom_event", 1_000 + int(draw * step))
            body["name"] = name
            self.emit(body)

    def foreground_stretch(self) -> None:
        """A run of activity events in the foreground, maybe with a login or user change."""
        rand = self.rand
        length = rand()
        size = 1 + int(length * length * 30)  # mostly short, sometimes long enough to fill a batch
        login_draw = rand()
        login_at = -1
        if self.user is None and login_draw < 0.25:
            login_at = int(login_draw * 4 * size)
        elif self.user is not None and login_draw > 0.98:
            login_at = int((login_draw - 0.98) * 50 * size)
        for position in range(size):
            if self.events >= self.target_events:
                break
            pause = rand()
            gap = 300 + int(pause * pause * 30_000)
            if pause > 0.97:
                gap *= 20  # a longer read, still far below the idle timeout
            if position == login_at:
                self.set_user(True)
                body = self.body("custom_event", gap)
                body["name"] = "login"
                self.emit(body)
                continue
            self.activity(rand(), gap)

    def activity(self, draw: float, gap: int) -> None:
        """One foreground event; `draw` picks its type and details."""
        if draw < 0.45:
            body = self.body("screen_view", gap)
            body["name"] = _SCREENS[int(draw * 22.2)]
        elif draw < 0.70:
            body = self.body("custom_event", gap)
            detail = (draw - 0.45) * 4
            body["name"] = _CUSTOM_EVENTS[int(detail * 8)]
            if detail < 0.5:
                body["attributes"] = {"source": _SCREENS[int(detail * 20)], "step": self.events}
        elif draw < 0.80:
            body = self.body("commerce_event", gap)
            detail = (draw - 0.70) * 10
            body["name"] = _COMMERCE_EVENTS[int(detail * 4)]
            body["attributes"] = {
                "sku": f"sku-{int(detail * 500)}",
                "price": _PRICES[int(detail * 6)],
                "currency": "EUR",
                "quantity": 1 + int(detail * 3),
            }
        else:
            body = self.body("session_attribute", gap)
            body["attribute"] = self.attribute_change((draw - 0.80) * 5)
        self.emit(body)

    def attribute_change(self, detail: float) -> dict[str, Any]:
        """A set or increment; increments only ever touch keys that hold numbers."""
        if detail < 0.2:
            self.plan_is_text = True
            return {"op": "set", "key": "plan", "value": _PLANS[int(detail * 15)]}
        if detail < 0.5:
            return {"op": "increment", "key": "cart_items", "value": 1 if detail < 0.45 else -1}
        if detail < 0.6:
            return {"op": "set", "key": "level", "value": 1 + int(detail * 400) % 50}
        if detail < 0.75:
            return {"op": "increment", "key": "level", "value": 1}
        if detail < 0.85:
            return {"op": "increment", "key": "score", "value": 0.5 if detail < 0.8 else 10}
        if detail < 0.93:
            return {"op": "set", "key": "dark_mode", "value": detail < 0.89}
        return {"op": "set", "key": "coupon", "value": None if detail < 0.96 else "SPRING"}

    def body(self, kind: str, gap: int) -> dict[str, Any]:
        """A new event body (no app_id/device_id/user_id) `gap` ms after the last event."""
        ts = self.ts = self.ts + gap
        number = self.events = self.events + 1
        return {"event_id": f"{self.device_id}-{number}", "type": kind, "ts": ts}

    def event(self, kind: str, gap: int) -> None:
        """A lifecycle event with no other fields."""
        self.emit(self.body(kind, gap))

    def emit(self, body: dict[str, Any]) -> None:
        """Add a valid event to the current upload, maybe with a retry and a bad message."""
        if self.custom_timeout_s is not None:
            body["session_timeout_s"] = self.custom_timeout_s
        user = self.user_field
        self.entries.append((_VALID, user, body))
        noise = self.rand()  # drawn whatever the rates, so the events do not depend on them
        if noise < self.duplicate_rate:
            self.retries_now.append((_RETRY, user, body))
        if noise >= self.bad_floor:
            self.bad((1.0 - noise) / self.spec.bad_rate, body)
        self.fresh += 1
        if self.fresh >= self.batch_size:
            self.flush()

    def bad(self, draw: float, after: dict[str, Any]) -> None:
        """Add one bad message; `draw` in (0, 1] picks its kind and details."""
        scaled = min(draw * len(BAD_KINDS), len(BAD_KINDS) - 1e-9)
        kind = BAD_KINDS[int(scaled)]
        detail = scaled - int(scaled)
        if kind == "attribute_not_numeric" and not (
            self.plan_is_text and after["type"] != "app_terminate"
        ):
            kind = "increment_not_numeric"
        ts = self.ts
        event_id = f"{self.device_id}-bad-{self.events}"
        if kind == "missing_field":
            body = {"event_id": event_id, "type": "custom_event", "ts": ts, "name": "broken"}
            self.entries.append((_BAD_EVENT, _REQUIRED[int(detail * 5)], body))
        elif kind == "ts_as_string":
            body = {"event_id": event_id, "type": "screen_view", "ts": str(ts), "name": "home"}
            self.entries.append((_BAD_EVENT, None, body))
        elif kind == "unknown_type":
            body = {"event_id": event_id, "type": "app_crash", "ts": ts}
            self.entries.append((_BAD_EVENT, None, body))
        elif kind in ("increment_not_numeric", "attribute_not_numeric"):
            value: Any = "three" if kind == "increment_not_numeric" else 1
            key = "cart_items" if kind == "increment_not_numeric" else "plan"
            attribute = {"op": "increment", "key": key, "value": value}
            body = {
                "event_id": event_id,
                "type": "session_attribute",
                "ts": ts,
                "attribute": attribute,
            }
            self.entries.append((_BAD_EVENT, None, body))
        elif kind == "ts_before_2000":
            old_ts = MIN_TS_MS - 1 if detail < 0.5 else ts // 1000  # seconds sent as ms
            body = {"event_id": event_id, "type": "custom_event", "ts": old_ts, "name": "clock"}
            self.entries.append((_BAD_EVENT, None, body))
        else:
            self.entries.append((_BAD_RAW, *self.raw_bad(kind, event_id, detail)))

    def raw_bad(self, kind: str, event_id: str, detail: float) -> tuple[bytes | None, bytes]:
        """A bad message that is not an event: (Kafka key, bytes)."""
        if kind == "garbage_bytes":
            seed = f"{self.spec.seed}/{event_id}".encode()
            noise = hashlib.blake2b(seed, digest_size=8 + int(detail * 40)).digest()
            # 0xff never occurs in UTF-8; no line break bytes, so it stays one JSONL line
            return None, b"\xff" + noise.replace(b"\n", b"\x00").replace(b"\r", b"\x00")
        event = {
            "event_id": event_id,
            "app_id": self.app_id,
            "device_id": self.device_id,
            "type": "screen_view",
            "ts": self.ts,
            "name": "home",
        }
        if kind == "truncated_json":
            whole = orjson.dumps(event)
            return self.key, whole[: max(1, int(len(whole) * (0.1 + detail * 0.8)))]
        if kind == "json_array":
            return self.key, orjson.dumps([event])
        batch = {"app_id": self.app_id, "device_id": self.device_id, "events": event}
        return self.key, orjson.dumps(batch)

    def flush(self) -> None:
        """Close the current upload: retries of the previous one first, then its entries."""
        entries = self.entries
        if self.retries_next:
            entries = self.retries_next + entries
        elif not entries:
            return
        delay = 150 + (self.events * 7_919 + self.index * 104_729) % (MAX_UPLOAD_DELAY_MS - 150)
        arrival = self.ts + delay
        if arrival < self.last_arrival:
            arrival = self.last_arrival
        self.last_arrival = arrival
        self.uploads.append((arrival, entries))
        if self.retries_now:
            self.retries_next = self.retries_now
            self.retries_now = []
        elif self.retries_next:
            self.retries_next = []
        self.entries = []
        self.fresh = 0


def _message_renderer(spec: WorkloadSpec) -> _Render:
    return _render_batches if spec.batch_size > 1 else _render_singles


def _full_event(device: _Device, user: Any, body: dict[str, Any]) -> dict[str, Any]:
    event_id = body["event_id"]
    event = {"event_id": event_id, "app_id": device.app_id, "device_id": device.device_id, **body}
    if user is not _ABSENT:
        event["user_id"] = user
    return event


def _render_events(device: _Device, arrival: int, entries: list[_Entry]) -> list[_Row]:
    """The upload's valid events (retries included) as full events, each its own objects."""
    rows: list[_Row] = []
    for kind, user, body in entries:
        if kind == _VALID:
            rows.append((arrival, _full_event(device, user, body)))
        elif kind == _RETRY:  # shares nested dicts with the original: copy them
            event = _full_event(device, user, body)
            rows.append(
                (arrival, {k: v.copy() if type(v) is dict else v for k, v in event.items()})
            )
    return rows


def _render_singles(device: _Device, arrival: int, entries: list[_Entry]) -> list[_Row]:
    """One message per entry of the upload."""
    dumps = orjson.dumps
    key = device.key
    rows: list[_Row] = []
    for kind, extra, body in entries:
        if kind <= _RETRY:
            rows.append((arrival, key, dumps(_full_event(device, extra, body))))
        elif kind == _BAD_EVENT:
            rows.append((arrival, key, dumps(_bad_event(device, extra, body))))
        else:
            rows.append((arrival, extra, body))
    return rows


def _bad_event(device: _Device, missing: str | None, body: dict[str, Any]) -> dict[str, Any]:
    event = _full_event(device, _ABSENT, body)
    if missing is not None:
        del event[missing]
    return event


def _render_batches(device: _Device, arrival: int, entries: list[_Entry]) -> list[_Row]:
    """One batch of the upload's events (bad ones inline), then its other bad messages."""
    key = device.key
    users = {extra for kind, extra, _body in entries if kind <= _RETRY}
    shared = users.pop() if len(users) == 1 else None
    hoisted = isinstance(shared, str)  # one known user: the batch carries it, events inherit
    events: list[dict[str, Any]] = []
    others: list[_Row] = []
    for kind, extra, body in entries:
        if kind <= _RETRY:
            events.append(body if hoisted or extra is _ABSENT else {**body, "user_id": extra})
        elif kind == _BAD_EVENT:
            if extra in ("app_id", "device_id"):  # would be inherited: send it alone
                others.append((arrival, key, orjson.dumps(_bad_event(device, extra, body))))
            elif extra is not None:
                events.append({name: value for name, value in body.items() if name != extra})
            else:
                events.append(body)
        else:
            others.append((arrival, extra, body))
    if not events:
        return others
    batch: dict[str, Any] = {"app_id": device.app_id, "device_id": device.device_id}
    if hoisted:
        batch["user_id"] = shared
    batch["events"] = events
    return [(arrival, key, orjson.dumps(batch)), *others]
