"""Rendering a device's uploads: as full events, as single-event messages, or as batches.

Each renderer gets the device, the upload's arrival time and its entries, and returns rows with
the arrival time first: (arrival, event) or (arrival, Kafka key, message bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from pipeline.workload.device import SimulatedDevice
from pipeline.workload.spec import WorkloadSpec
from pipeline.workload.uploads import ABSENT, BAD_EVENT, RETRY, VALID, Entry

Row = tuple[Any, ...]
Render = Callable[[SimulatedDevice, int, list[Entry]], list[Row]]


def message_renderer(spec: WorkloadSpec) -> Render:
    """Batches when the spec asks for more than one event per upload, else single events."""
    return render_batches if spec.batch_size > 1 else render_singles


def _full_event(device: SimulatedDevice, user: Any, body: dict[str, Any]) -> dict[str, Any]:
    event_id = body["event_id"]
    event = {"event_id": event_id, "app_id": device.app_id, "device_id": device.device_id, **body}
    if user is not ABSENT:
        event["user_id"] = user
    return event


def render_events(device: SimulatedDevice, arrival: int, entries: list[Entry]) -> list[Row]:
    """The upload's valid events (retries included) as full events, each its own objects."""
    rows: list[Row] = []
    for kind, user, body in entries:
        if kind == VALID:
            rows.append((arrival, _full_event(device, user, body)))
        elif kind == RETRY:  # shares nested dicts with the original: copy them
            event = _full_event(device, user, body)
            rows.append(
                (arrival, {k: v.copy() if type(v) is dict else v for k, v in event.items()})
            )
    return rows


def render_singles(device: SimulatedDevice, arrival: int, entries: list[Entry]) -> list[Row]:
    """One message per entry of the upload."""
    dumps = orjson.dumps
    key = device.key
    rows: list[Row] = []
    for kind, extra, body in entries:
        if kind <= RETRY:
            rows.append((arrival, key, dumps(_full_event(device, extra, body))))
        elif kind == BAD_EVENT:
            rows.append((arrival, key, dumps(_bad_event(device, extra, body))))
        else:
            rows.append((arrival, extra, body))
    return rows


def _bad_event(
    device: SimulatedDevice, missing: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    event = _full_event(device, ABSENT, body)
    if missing is not None:
        del event[missing]
    return event


def render_batches(device: SimulatedDevice, arrival: int, entries: list[Entry]) -> list[Row]:
    """One batch of the upload's events (bad ones inline), then its other bad messages."""
    key = device.key
    users = {extra for kind, extra, _body in entries if kind <= RETRY}
    shared = users.pop() if len(users) == 1 else None
    hoisted = isinstance(shared, str)  # one known user: the batch carries it, events inherit
    events: list[dict[str, Any]] = []
    others: list[Row] = []
    for kind, extra, body in entries:
        if kind <= RETRY:
            events.append(body if hoisted or extra is ABSENT else {**body, "user_id": extra})
        elif kind == BAD_EVENT:
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
