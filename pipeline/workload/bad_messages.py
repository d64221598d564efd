"""The bad messages of the SDK noise, one kind at a time: garbage bytes, truncated JSON, a JSON
array, a batch whose `events` is not an array, a missing field, `ts` as a string, an unknown
`type`, a non-numeric increment, `ts` before 2000, an increment of an attribute holding text.

A bad event's id is `<device_id>-bad-<n>`, never the id of a valid event.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Final

import orjson

from pipeline.vocabulary import (
    APP_TERMINATE,
    CUSTOM_EVENT,
    MIN_TS_MS,
    SCREEN_VIEW,
    SESSION_ATTRIBUTE,
)
from pipeline.workload.uploads import BAD_EVENT, BAD_RAW, Entry

if TYPE_CHECKING:
    from pipeline.workload.device import SimulatedDevice

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

_REQUIRED: Final = ("event_id", "app_id", "device_id", "type", "ts")


def bad_entry(device: SimulatedDevice, draw: float, after: dict[str, Any]) -> Entry:
    """One bad message of `device`, right after its event `after`; `draw` in (0, 1] picks its
    kind and details."""
    scaled = min(draw * len(BAD_KINDS), len(BAD_KINDS) - 1e-9)
    kind = BAD_KINDS[int(scaled)]
    detail = scaled - int(scaled)
    if kind == "attribute_not_numeric" and not (
        device.plan_is_text and after["type"] != APP_TERMINATE
    ):
        kind = "increment_not_numeric"
    ts = device.ts
    event_id = f"{device.device_id}-bad-{device.events}"
    if kind == "missing_field":
        body = {"event_id": event_id, "type": CUSTOM_EVENT, "ts": ts, "name": "broken"}
        return (BAD_EVENT, _REQUIRED[int(detail * 5)], body)
    if kind == "ts_as_string":
        body = {"event_id": event_id, "type": SCREEN_VIEW, "ts": str(ts), "name": "home"}
        return (BAD_EVENT, None, body)
    if kind == "unknown_type":
        body = {"event_id": event_id, "type": "app_crash", "ts": ts}
        return (BAD_EVENT, None, body)
    if kind in ("increment_not_numeric", "attribute_not_numeric"):
        value: Any = "three" if kind == "increment_not_numeric" else 1
        key = "cart_items" if kind == "increment_not_numeric" else "plan"
        attribute = {"op": "increment", "key": key, "value": value}
        body = {
            "event_id": event_id,
            "type": SESSION_ATTRIBUTE,
            "ts": ts,
            "attribute": attribute,
        }
        return (BAD_EVENT, None, body)
    if kind == "ts_before_2000":
        old_ts = MIN_TS_MS - 1 if detail < 0.5 else ts // 1000  # seconds sent as ms
        body = {"event_id": event_id, "type": CUSTOM_EVENT, "ts": old_ts, "name": "clock"}
        return (BAD_EVENT, None, body)
    return (BAD_RAW, *_raw_bad(device, kind, event_id, detail))


def _raw_bad(
    device: SimulatedDevice, kind: str, event_id: str, detail: float
) -> tuple[bytes | None, bytes]:
    """A bad message that is not an event: (Kafka key, bytes)."""
    if kind == "garbage_bytes":
        seed = f"{device.spec.seed}/{event_id}".encode()
        noise = hashlib.blake2b(seed, digest_size=8 + int(detail * 40)).digest()
        # 0xff never occurs in UTF-8; no line break bytes, so it stays one JSONL line
        return None, b"\xff" + noise.replace(b"\n", b"\x00").replace(b"\r", b"\x00")
    event = {
        "event_id": event_id,
        "app_id": device.app_id,
        "device_id": device.device_id,
        "type": SCREEN_VIEW,
        "ts": device.ts,
        "name": "home",
    }
    if kind == "truncated_json":
        whole = orjson.dumps(event)
        return device.key, whole[: max(1, int(len(whole) * (0.1 + detail * 0.8)))]
    if kind == "json_array":
        return device.key, orjson.dumps([event])
    batch = {"app_id": device.app_id, "device_id": device.device_id, "events": event}
    return device.key, orjson.dumps(batch)
