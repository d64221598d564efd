"""One simulated device: its whole life of app lifecycles, from its own seeded generator.

A device installed with one app launches, runs a stretch of screen views, custom and commerce
events and session attribute changes, backgrounds, then resumes within the session timeout,
resumes past it, terminates, is killed (a new launch while the session is open), crashes in the
foreground, idles in the foreground past the idle timeout, or idles long before its next launch.
Its events go into uploads (see pipeline.workload.uploads) with their SDK noise: retries of the
previous upload and, now and then, a bad message (pipeline.workload.bad_messages).
"""

from __future__ import annotations

from random import Random
from typing import Any, Final

from pipeline.vocabulary import (
    APP_BACKGROUND,
    APP_FOREGROUND,
    APP_LAUNCH,
    APP_TERMINATE,
    SESSION_ATTRIBUTE,
)
from pipeline.workload.bad_messages import bad_entry
from pipeline.workload.spec import (
    DEFAULT_TIMEOUT_MS,
    IDLE_TIMEOUT_MS,
    MAX_UPLOAD_DELAY_MS,
    START_WINDOW_MS,
    WorkloadSpec,
)
from pipeline.workload.uploads import ABSENT, RETRY, VALID, Entry, Upload

_SEED_STRIDE: Final = 1 << 32
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


class SimulatedDevice:
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
        self.user_field: Any = None  # what events carry as user_id: a str, None or ABSENT
        logged_in = rand() < 0.35
        self.sends_null_user = rand() < 0.5
        self.set_user(logged_in)
        self.target_events = max(1, int(spec.events_per_device * (0.5 + rand()) - 1))
        self.events = 0
        self.plan_is_text = False  # the open session holds a text "plan" (for a bad increment)
        self.duplicate_rate = spec.duplicate_rate
        self.bad_floor = 1.0 - spec.bad_rate if spec.bad_rate > 0.0 else 2.0
        self.batch_size = spec.batch_size
        self.entries: list[Entry] = []
        self.fresh = 0  # valid, non-retry entries in the current upload
        self.retries_now: list[Entry] = []  # retries of this upload's events: sent next time
        self.retries_next: list[Entry] = []  # retries that go at the start of this upload
        self.uploads: list[Upload] = []
        self.last_arrival = 0

    def set_user(self, logged_in: bool) -> None:
        """Log the next user in (the device's first user, then "user-000042-2" and so on)."""
        if logged_in:
            self.user_count += 1
            base = f"user-{self.index:06d}"
            self.user = base if self.user_count == 1 else f"{base}-{self.user_count}"
        self.user_field = self.user
        if self.user is None and not self.sends_null_user:
            self.user_field = ABSENT

    def run(self) -> list[Upload]:
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
            self.event(APP_BACKGROUND, 200 + int(gap * 4_800))
            self.flush()
            if rand() < 0.06:  # a background task logs while backgrounded
                self.background_task(rand())
            if done:
                if rand() < 0.35:
                    self.event(APP_TERMINATE, int(rand() * 2_000))
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
                self.event(APP_TERMINATE, int(gap * 2_000))
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
        self.event(APP_LAUNCH, gap)

    def foreground(self, gap: int, new_session: bool) -> None:
        """An app_foreground; one past the timeout starts a new session, so a new upload."""
        if new_session:
            self.flush()
            self.plan_is_text = False
        self.event(APP_FOREGROUND, gap)

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
            body = self.body(SESSION_ATTRIBUTE, gap)
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
        self.entries.append((VALID, user, body))
        noise = self.rand()  # drawn whatever the rates, so the events do not depend on them
        if noise < self.duplicate_rate:
            self.retries_now.append((RETRY, user, body))
        if noise >= self.bad_floor:
            self.entries.append(bad_entry(self, (1.0 - noise) / self.spec.bad_rate, body))
        self.fresh += 1
        if self.fresh >= self.batch_size:
            self.flush()

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
