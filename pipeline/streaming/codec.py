"""The device table's codec: how a device's states are written to the changelog and read back.

A table value holds the device's states (one per rules profile, see
`pipeline.processing.processor`), its partition, and the Kafka timestamp and event time of its
last message (what `pipeline.streaming.expiry` needs to date its deadline), as JSON compressed
with zstd behind a small header (`DeviceEntry.to_value`): the table is the one full copy of
every device, so its size is the worker's memory with the memory store. The states leave out
their app_id and device_id: the key has them. Values of earlier versions (plain JSON, with the
ids) are read too.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
import zstandard

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
        """The entry as JSON (what a table value holds, compressed)."""
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
        return orjson.dumps(
            {
                "partition": self.partition,
                "arrival_ms": self.arrival_ms,
                "latest_ts": self.latest_ts,
                "states": states,
            }
        )

    def to_value(self, deadline: int | None) -> bytes:
        """The table value, as written to the changelog: a header (`Header`: the partition,
        the arrival, the newest event time and `deadline`, the earliest deadline of its open
        sessions, None with none open), then the JSON compressed."""
        header = _HEADER.pack(
            VALUE_FORMAT,
            self.partition,
            self.arrival_ms,
            self.latest_ts,
            _NO_DEADLINE if deadline is None else deadline,
        )
        return header + _COMPRESSOR.compress(self.to_json())  # (a new bytes of its own size)

    @classmethod
    def from_value(cls, value: bytes, key: bytes) -> DeviceEntry:
        """Inverse of `to_value`, for the device of table key `key` (values written as plain
        JSON by earlier versions are read too)."""
        if value[:1] != b"{":
            _check_format(value)
            value = _DECOMPRESSOR.decompress(value[_HEADER.size :])
        raw = orjson.loads(value)
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


class Header(NamedTuple):
    """What a table value says of its device without being decoded: enough to count it, to
    book its deadline (`pipeline.streaming.expiry.due_at`) and to evict it."""

    partition: int
    arrival_ms: int
    latest_ts: int
    deadline: int | None  # the earliest deadline of its open sessions; None: none open


# A table value: format, then Header's fields; then a zstd frame of the JSON.
VALUE_FORMAT = 1
_HEADER = struct.Struct("<BIqqq")
_NO_DEADLINE = -1  # (event times are after 2000)
# zstd with a dictionary of the JSON's shape: field names and the usual numbers, no data.
# Values of 600-700 bytes take about 250 (measured on bench_state's devices). Changing the
# dictionary makes the values written before it unreadable: a new one needs a new format.
_SHAPE = (
    b'{"partition":0,"arrival_ms":1790000000000,"latest_ts":1790000000000,"states":[{'
    b'"session_count":1,"open":{"session_id":"","session_number":1,"start_ts":1790000000000,'
    b'"last_ts":1790000000000,"timeout_ms":60000,"foreground_since":null,"foreground_ms":0,'
    b'"counted_until":1790000000000,"event_count":1,"user_id":null,"user_ids":[],'
    b'"attributes":{},"event_ids":{"":null,"":null}},"last_closed":{"session_id":"",'
    b'"start_ts":1790000000000,"duration_ms":0,"event_ids":{"":null}},"earlier":[],'
    b'"latest_ts":1790000000000}]}'
)
_DICTIONARY = zstandard.ZstdCompressionDict(_SHAPE, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
_COMPRESSOR = zstandard.ZstdCompressor(
    level=1, dict_data=_DICTIONARY, write_checksum=False, write_dict_id=False
)
_DECOMPRESSOR = zstandard.ZstdDecompressor(dict_data=_DICTIONARY)
_LEGACY_HEAD = re.compile(rb'\{"partition":(\d+),"arrival_ms":(-?\d+),')


def _check_format(value: bytes) -> None:
    if value[0] != VALUE_FORMAT:
        raise ValueError(f"a table value of format {value[0]}: written by a newer version?")


def stored_header(value: bytes) -> Header | None:
    """The header of a table value (None: plain JSON of an earlier version, which has none)."""
    if value[:1] == b"{":
        return None
    _check_format(value)
    _, partition, arrival_ms, latest_ts, deadline = _HEADER.unpack_from(value)
    return Header(partition, arrival_ms, latest_ts, None if deadline == _NO_DEADLINE else deadline)


def stored_head(value: bytes) -> tuple[int, int]:
    """The partition and arrival of a table value, read without decoding it."""
    header = stored_header(value)
    if header is not None:
        return header.partition, header.arrival_ms
    head = _LEGACY_HEAD.match(value)
    if head is not None:
        return int(head[1]), int(head[2])
    raw = orjson.loads(value)
    return raw["partition"], raw["arrival_ms"]


def stored_partition(value: bytes) -> int:
    """The partition of a table value, read without decoding it."""
    return stored_head(value)[0]


def has_open_session(value: bytes) -> bool:
    """Whether a table value holds an open session, read without decoding it. Exact for the
    plain JSON of earlier versions too: `"open":{` can only be the states' `open` field (inside
    a JSON string the quotes are escaped, and only an open session holds objects of its users'
    keys, `attributes`)."""
    header = stored_header(value)
    if header is not None:
        return header.deadline is not None
    return b'"open":{' in value
