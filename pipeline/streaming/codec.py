"""The device table's codec: how a device's states are written to the changelog and read back.

A table value is JSON: the device's states (one per rules profile, see
`pipeline.processing.processor`), its partition, and the Kafka timestamp and event time of its
last message (what `pipeline.streaming.expiry` needs to date its deadline). The states leave
out their app_id and device_id: the key has them (values written with them are read too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.engine import ClosedSession, DeviceState, EarlierSession, OpenSession

# Written outside transactions after each commit, so the changelog ends with a record Faust's
# recovery can read (it waits for the last offset, which would otherwise be a commit marker).
# No device has this key: readers of the table skip it.
CHECKPOINT_KEY = b"\x00checkpoint"


def table_key(app_id: str, device_id: str) -> bytes:
    """The table key of a device: (app_id, device_id)."""
    return _kept(orjson.dumps([app_id, device_id]))


def _kept(data: bytes) -> bytes:
    # orjson (3.13) leaves a ~4 KB allocation behind each result however short; what the table
    # keeps for a device's life is copied into one of its own size (~100 ns, measured fastest).
    return b"%b" % data


def state_to_json(state: DeviceState) -> bytes:
    """One device state as JSON."""
    return orjson.dumps(state, default=_refuse)


def state_from_json(data: bytes) -> DeviceState:
    """Inverse of `state_to_json`."""
    return state_from_obj(orjson.loads(data))


def state_from_obj(raw: dict[str, Any]) -> DeviceState:
    """A state from its parsed JSON form (states written before the duplicate window have no
    `earlier` or `latest_ts`)."""
    state = DeviceState(raw["app_id"], raw["device_id"], raw["session_count"])
    if (s := raw["open"]) is not None:
        s["event_ids"] = dict.fromkeys(s["event_ids"])
        state.open = OpenSession(**s)
    if (c := raw["last_closed"]) is not None:
        c["event_ids"] = dict.fromkeys(c["event_ids"])
        state.last_closed = ClosedSession(**c)
    state.earlier = [
        EarlierSession(e["end_ts"], dict.fromkeys(e["event_ids"])) for e in raw.get("earlier", ())
    ]
    state.latest_ts = raw.get("latest_ts", 0)
    return state


def _refuse(value: Any) -> Any:
    raise TypeError(f"cannot serialize {type(value).__name__}")


@dataclass(slots=True)
class DeviceEntry:
    """A device's entry in the table: its states and when its last message arrived."""

    states: list[DeviceState]
    partition: int
    arrival_ms: int = 0  # Kafka timestamp of the device's last message
    latest_ts: int = 0  # newest event time seen on the device

    def to_json(self) -> bytes:
        """The table value, as written to the changelog."""
        first = self.states[0]
        ids = b'{"app_id":%b,"device_id":%b,' % (
            orjson.dumps(first.app_id),
            orjson.dumps(first.device_id),
        )
        states = []
        for state in self.states:
            data = state_to_json(state)
            if data.startswith(ids):  # (every state of a device has its ids)
                data = b"{" + data[len(ids) :]
            states.append(orjson.Fragment(data))
        return _kept(
            orjson.dumps(
                {
                    "partition": self.partition,
                    "arrival_ms": self.arrival_ms,
                    "latest_ts": self.latest_ts,
                    "states": states,
                }
            )
        )

    @classmethod
    def from_json(cls, data: bytes, key: bytes) -> DeviceEntry:
        """Inverse of `to_json`, for the device of table key `key`."""
        raw = orjson.loads(data)
        states = raw["states"]
        if states and "app_id" not in states[0]:
            app_id, device_id = orjson.loads(key)
            for state in states:
                state["app_id"] = app_id
                state["device_id"] = device_id
        return cls(
            [state_from_obj(s) for s in states],
            raw["partition"],
            raw["arrival_ms"],
            raw["latest_ts"],
        )


_HEAD = re.compile(rb'\{"partition":(\d+),"arrival_ms":(-?\d+),')


def stored_head(value: bytes) -> tuple[int, int]:
    """The partition and arrival of a table value, read without decoding it (`to_json` writes
    them first)."""
    head = _HEAD.match(value)
    if head is not None:
        return int(head[1]), int(head[2])
    raw = orjson.loads(value)
    return raw["partition"], raw["arrival_ms"]


def stored_partition(value: bytes) -> int:
    """The partition of a table value, read without decoding it."""
    return stored_head(value)[0]


def has_open_session(value: bytes) -> bool:
    """Whether a table value holds an open session, read without decoding it. Exact: `"open":{`
    can only be the states' `open` field (inside a JSON string the quotes are escaped, and
    only an open session holds objects of its users' keys, `attributes`)."""
    return b'"open":{' in value
