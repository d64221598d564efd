"""Properties of offline mode over generated device lifecycles (SPEC sections 1-5).

The strategy builds, per (app_id, device_id), a lifecycle of launch / foreground / background /
terminate / screen views / custom and commerce events / attribute set and increment, with gaps
around the 60 s session timeout (exactly 60_000 ms included) and the 1800 s idle timeout, SDK
re-sends of earlier events, batches (some holding bad events), several devices of two apps
interleaved (the same event_ids recur across device keys), and a few bad lines.

Expected counts come from the generated input itself: the generator knows which lines and batch
entries are bad, and `RulesModel` (a deliberately naive second reading of SPEC section 3) says
which valid events are applied, duplicates or non-numeric increments, and in which session.
Every output record is also checked against its schema.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import Config, load_config
from pipeline.offline import run_offline
from pipeline.partners import Partner
from tests.schema_check import check_output_dir, partner_formats

NOW = 1_790_000_000_000  # processing time (future-skew check)
T0 = NOW - 30 * 86_400_000  # generated event times start a month earlier
TIMEOUT_MS = 60_000
IDLE_MS = 1_800_000
DEDUP_WINDOW_MS = 3_600_000
MIN_TS = 946_684_800_000

APPS = ("app-a", "app-b")
DEVICES = ("dev-1", "dev-2", "dev-3")
SESSION_FIELDS = ("session_id", "session_number", "session_seq", "session_start_ts")

Record = dict[str, Any]
Key = tuple[str, str]

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- the generated input ---------------------------------------------------------------------

STEP_KINDS = (
    "app_launch",
    "app_foreground",
    "app_background",
    "app_terminate",
    "screen_view",
    "custom_event",
    "commerce_event",
    "attribute_set",
    "attribute_increment",
)
BOUNDARY_GAPS = (0, 1, 59_999, 60_000, 60_001, 1_799_999, 1_800_000, 1_800_001)
gaps = st.one_of(st.sampled_from(BOUNDARY_GAPS), st.integers(0, 130_000))
_ABSENT = object()

# Bad entries inside a batch: (entry, reason). Each is dead-lettered alone, with its index.
BATCH_BAD: tuple[tuple[Any, str], ...] = (
    ({"event_id": "bad", "type": "screen_view"}, "invalid_event"),  # no ts
    ({"event_id": "bad", "type": "app_crash", "ts": T0}, "invalid_event"),
    ({"event_id": "bad", "type": "screen_view", "ts": str(T0)}, "invalid_event"),
    (
        {
            "event_id": "bad",
            "type": "session_attribute",
            "ts": T0,
            "attribute": {"op": "increment", "key": "level", "value": "x"},
        },
        "invalid_event",
    ),
    ({"event_id": "bad", "type": "screen_view", "ts": MIN_TS - 1}, "timestamp_out_of_range"),
    (42, "invalid_event"),
)


def _whole_bad(app_id: str, device_id: str) -> list[tuple[bytes, str]]:
    """Bad lines naming a real device key: none of them may touch its sessions."""
    who = {"app_id": app_id, "device_id": device_id}
    single = {"event_id": "e0", **who, "type": "app_launch", "ts": T0}
    return [
        (b"", "malformed_json"),
        (b"\xff\xfe not utf-8 \x80", "malformed_json"),
        (b"[1, 2, 3]", "malformed_json"),
        (orjson.dumps(single)[:-7], "malformed_json"),
        (orjson.dumps({k: v for k, v in single.items() if k != "ts"}), "invalid_event"),
        (orjson.dumps({**single, "type": "launch"}), "invalid_event"),
        (orjson.dumps({**single, "ts": MIN_TS - 1}), "timestamp_out_of_range"),
        (orjson.dumps({**single, "ts": NOW + 86_400_001}), "timestamp_out_of_range"),
        (orjson.dumps({**who, "events": "e0"}), "invalid_event"),
    ]


@dataclass
class Generated:
    """An input file and what is known about it by construction."""

    lines: list[bytes] = field(default_factory=list)
    whole_bad: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    batch_bad: list[tuple[int, int, str]] = field(default_factory=list)  # (line, index, reason)
    # Valid events after batch inheritance, in the order they are applied, with their origin
    # (line, index in batch or None).
    valid: list[tuple[Record, int, int | None]] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(line + b"\n" for line in self.lines)

    @property
    def event_count(self) -> int:
        """Events inside messages that were not rejected whole: valid ones and bad batch entries."""
        return len(self.valid) + len(self.batch_bad)


@st.composite
def lifecycle(draw: st.DrawFn, key: Key, resend: bool) -> list[Record]:
    """One device key's events in send order (re-sends of earlier events included)."""
    app_id, device_id = key
    ts = T0 + draw(st.integers(0, 200_000))
    events: list[Record] = []
    for number in range(draw(st.integers(1, 14))):
        ts += draw(gaps)
        kind = draw(st.sampled_from(STEP_KINDS))
        # The same event_ids recur in every device key: duplicates are per device key.
        event: Record = {"event_id": f"e{number}", "app_id": app_id, "device_id": device_id}
        if kind.startswith("attribute_"):
            key_name = draw(st.sampled_from(("level", "plan")))
            if kind == "attribute_set":
                values = (0, 3, 2.5) if key_name == "level" else ("free", "pro", True, None)
                change = {"op": "set", "key": key_name, "value": draw(st.sampled_from(values))}
            else:
                change = {
                    "op": "increment",
                    "key": key_name,
                    "value": draw(st.sampled_from((1, -2, 0.5))),
                }
            event.update(type="session_attribute", ts=ts, attribute=change)
        else:
            event.update(type=kind, ts=ts)
            if kind in ("screen_view", "custom_event", "commerce_event"):
                event["name"] = draw(st.sampled_from(("home", "cart")))
        user_id = draw(st.sampled_from((_ABSENT, _ABSENT, None, "u1", "u2")))
        if user_id is not _ABSENT:
            event["user_id"] = user_id
        timeout_s = draw(st.sampled_from((None, None, None, None, None, 30, 90)))
        if timeout_s is not None:
            event["session_timeout_s"] = timeout_s
        if draw(st.integers(0, 9)) == 0:
            event["sdk"] = {"os": "android"}  # unknown fields pass through
        events.append(event)
    if resend:
        for _ in range(draw(st.integers(0, 3))):
            source = draw(st.integers(0, len(events) - 1))
            target = draw(st.integers(source + 1, len(events)))
            events.insert(target, dict(events[source]))
    return events


@dataclass
class _Unit:
    """One message of a device key: a single event, or a batch with maybe one bad entry."""

    events: list[Record]
    as_batch: bool
    bad: tuple[int, Any, str] | None = None  # (index, entry, reason)
    batch_user: Any = _ABSENT
    keep_identity: bool = False


@st.composite
def units_of(draw: st.DrawFn, events: list[Record]) -> list[_Unit]:
    """A key's events as messages: single events, and batches of 1-4 events in send order."""
    units: list[_Unit] = []
    position = 0
    while position < len(events):
        if not draw(st.booleans()):
            units.append(_Unit([events[position]], as_batch=False))
            position += 1
            continue
        size = draw(st.integers(1, 4))
        chunk = events[position : position + size]
        position += size
        unit = _Unit(chunk, as_batch=True, keep_identity=draw(st.booleans()))
        unit.batch_user = draw(st.sampled_from((_ABSENT, _ABSENT, None, "u-batch")))
        if draw(st.integers(0, 3)) == 0:
            entry, reason = draw(st.sampled_from(BATCH_BAD))
            unit.bad = (draw(st.integers(0, len(chunk))), entry, reason)
        units.append(unit)
    return units


def _render(unit: _Unit, key: Key, line: int, generated: Generated) -> bytes:
    if not unit.as_batch:
        event = unit.events[0]
        generated.valid.append((event, line, None))
        return orjson.dumps(event)
    entries: list[Any] = []
    for event in unit.events:
        sent = dict(event)
        if not unit.keep_identity:
            del sent["app_id"], sent["device_id"]
        entries.append(sent)
    if unit.bad is not None:
        index, entry, reason = unit.bad
        entries.insert(index, entry)
        generated.batch_bad.append((line, index, reason))
    for index, sent in enumerate(entries):
        if unit.bad is not None and index == unit.bad[0]:
            continue
        effective = {**sent, "app_id": key[0], "device_id": key[1]}
        if unit.batch_user is not _ABSENT:
            effective.setdefault("user_id", unit.batch_user)
        generated.valid.append((effective, line, index))
    message: Record = {"app_id": key[0], "device_id": key[1]}
    if unit.batch_user is not _ABSENT:
        message["user_id"] = unit.batch_user
    message["events"] = entries
    return orjson.dumps(message)


@st.composite
def generated_inputs(draw: st.DrawFn, resend: bool = True) -> Generated:
    """Several device keys of two apps, interleaved line by line, each in its own order.

    `resend=False` leaves out SDK re-sends, so every key's events arrive in time order.
    """
    all_keys = [(app, device) for app in APPS for device in DEVICES]
    keys = draw(st.lists(st.sampled_from(all_keys), min_size=1, max_size=4, unique=True))
    units = {key: draw(units_of(draw(lifecycle(key, resend)))) for key in keys}
    order = draw(st.permutations([key for key in keys for _ in units[key]]))
    bad_kinds = st.integers(0, len(_whole_bad("", "")) - 1)
    bad = draw(st.lists(st.tuples(st.integers(0, len(order)), bad_kinds), max_size=3))
    generated = Generated()
    taken: Counter[Key] = Counter()
    slots: list[tuple[Key, int | None]] = [(key, None) for key in order]  # None: a unit
    for position, kind in sorted(bad, reverse=True):
        slots.insert(position, (keys[position % len(keys)], kind))
    for line, (key, bad_kind) in enumerate(slots, start=1):
        if bad_kind is not None:
            message, reason = _whole_bad(*key)[bad_kind]
            generated.whole_bad.append((line, reason))
            generated.lines.append(message)
            continue
        unit = units[key][taken[key]]
        taken[key] += 1
        generated.lines.append(_render(unit, key, line, generated))
    return generated


# --- an independent reading of the session rules ---------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class _ModelSession:
    number: int
    last_ts: int
    backgrounded: bool
    timeout_ms: int
    event_ids: set[str] = field(default_factory=set)
    attributes: dict[str, Any] = field(default_factory=dict)
    count: int = 0


@dataclass
class _ModelDevice:
    sessions: int = 0
    open: _ModelSession | None = None
    closed: list[tuple[int, set[str]]] = field(default_factory=list)  # (end_ts, ids), in order
    latest_ts: int = 0

    def close(self) -> None:
        assert self.open is not None
        self.closed.append((self.open.last_ts, self.open.event_ids))
        self.open = None

    def remembers(self, event_id: str) -> bool:
        """Rule 1: in the open session, the last closed one, or one that ended in the window."""
        if self.open is not None and event_id in self.open.event_ids:
            return True
        for position, (end_ts, ids) in enumerate(reversed(self.closed)):
            recent = position == 0 or end_ts >= self.latest_ts - DEDUP_WINDOW_MS
            if recent and event_id in ids:
                return True
        return False


def _increments_text(session: _ModelSession | None, change: Record | None) -> bool:
    """An increment of an attribute the open session holds as a non-number (absent is 0)."""
    if session is None or change is None or change["op"] != "increment":
        return False
    return not _is_number(session.attributes.get(change["key"], 0))


@dataclass
class Verdict:
    """What SPEC section 3 says happens to one valid event."""

    outcome: str  # "applied", "duplicate" or "attribute_not_numeric"
    session_number: int | None = None
    session_seq: int | None = None


class RulesModel:
    """SPEC section 3 with default timeouts, written for clarity, not speed."""

    def __init__(self) -> None:
        self.devices: dict[Key, _ModelDevice] = defaultdict(_ModelDevice)

    def apply(self, event: Record) -> Verdict:
        device = self.devices[(event["app_id"], event["device_id"])]
        session, ts = device.open, event["ts"]
        if device.remembers(event["event_id"]):
            return Verdict("duplicate")
        if session is not None:
            limit = session.timeout_ms if session.backgrounded else IDLE_MS
            if ts >= session.last_ts + limit:
                device.close()
        change = event.get("attribute")
        if _increments_text(device.open, change):
            return Verdict("attribute_not_numeric")
        if event["type"] == "app_launch" and device.open is not None:
            device.close()
        if device.open is None:
            device.sessions += 1
            backgrounded = event["type"] == "app_background"
            device.open = _ModelSession(device.sessions, ts, backgrounded, TIMEOUT_MS)
        session = device.open
        session.count += 1
        session.event_ids.add(event["event_id"])
        session.last_ts = max(session.last_ts, ts)
        device.latest_ts = max(device.latest_ts, ts)
        if "session_timeout_s" in event:
            session.timeout_ms = round(event["session_timeout_s"] * 1000)
        if event["type"] == "app_background":
            session.backgrounded = True
        elif event["type"] == "app_foreground":
            session.backgrounded = False
        elif change is not None:
            if change["op"] == "set":
                session.attributes[change["key"]] = change["value"]
            else:
                current = session.attributes.get(change["key"], 0)
                session.attributes[change["key"]] = current + change["value"]
        verdict = Verdict("applied", session.number, session.count)
        if event["type"] == "app_terminate":
            device.close()
        return verdict


# --- running -----------------------------------------------------------------------------------


# Defaults, all five partners; and the same with the canonical partner alone (cheaper to check:
# the session properties do not depend on partner formats).
ALL_PARTNERS = load_config(None, env={})
CANONICAL_ONLY = Config(
    sessions=ALL_PARTNERS.sessions,
    limits=ALL_PARTNERS.limits,
    partners=(Partner(name="canonical", format="canonical", topic="partner.canonical"),),
)


@contextmanager
def offline_run(
    data: bytes, config: Config = CANONICAL_ONLY
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Run offline mode over `data`; yield the output dir and its records (schema-checked)."""
    with tempfile.TemporaryDirectory() as directory:
        output_dir = Path(directory)
        with tempfile.TemporaryFile() as source:
            source.write(data)
            source.seek(0)
            run_offline(source, output_dir, config, NOW)  # type: ignore[arg-type]
        yield output_dir, check_output_dir(output_dir, partner_formats(config.partners))


def _sessions_by_id(outputs: dict[str, Any]) -> dict[str, dict[str, list[Record]]]:
    by_id: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for record in outputs["sessions"]:
        by_id[record["session_id"]][record["type"]].append(record)
    return by_id


def _key(record: Record) -> Key:
    return (record["app_id"], record["device_id"])


# --- properties ------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(generated_inputs())
def test_every_applied_event_belongs_to_exactly_one_started_and_ended_session(
    generated: Generated,
) -> None:
    with offline_run(generated.data) as (_, outputs):
        sessions = _sessions_by_id(outputs)
        for session_id, records in sessions.items():
            assert len(records["session_start"]) == 1, session_id
            assert len(records["session_end"]) == 1, session_id
        members: dict[str, list[Record]] = defaultdict(list)
        for event in outputs["enriched"]:
            records = sessions.get(event["session_id"])
            assert records is not None, f"{event['event_id']} is in no session"
            [start] = records["session_start"]
            assert _key(start) == _key(event)
            assert event["session_number"] == start["session_number"]
            assert event["session_start_ts"] == start["start_ts"]
            members[event["session_id"]].append(event)
        for session_id, records in sessions.items():
            [start], [end] = records["session_start"], records["session_end"]
            events = members[session_id]
            assert [e["session_seq"] for e in events] == list(range(1, len(events) + 1))
            assert end["event_count"] == len(events)
            assert start["start_ts"] == end["start_ts"] == events[0]["ts"]
            assert end["end_ts"] == max(e["ts"] for e in events)
            assert end["duration_ms"] == end["end_ts"] - end["start_ts"]
            assert 0 <= end["foreground_ms"] <= end["duration_ms"]
            assert (_key(start), start["session_number"]) == (_key(end), end["session_number"])


@PROPERTY_SETTINGS
@given(generated_inputs())
def test_session_numbers_of_a_device_key_run_1_to_n_and_alternate_start_end(
    generated: Generated,
) -> None:
    with offline_run(generated.data) as (_, outputs):
        per_key: dict[Key, list[Record]] = defaultdict(list)
        for record in outputs["sessions"]:
            per_key[_key(record)].append(record)
        for key, records in per_key.items():
            count = len(records) // 2
            expected = [
                (kind, number)
                for number in range(1, count + 1)
                for kind in ("session_start", "session_end")
            ]
            assert [(r["type"], r["session_number"]) for r in records] == expected, key
            starts = records[0::2]
            for previous, start in zip(records[1::2], starts[1:], strict=False):
                assert start["previous_session_id"] == previous["session_id"]
                assert start["previous_session_start_ts"] == previous["start_ts"]
                assert start["previous_session_duration_ms"] == previous["duration_ms"]
            assert starts[0]["previous_session_id"] is None


@PROPERTY_SETTINGS
@given(generated_inputs(resend=False))
def test_in_order_sessions_of_a_device_key_do_not_overlap(generated: Generated) -> None:
    """end_ts(n) <= start_ts(n+1), strictly when n ended by timeout or idle.

    With no re-sends a key's events arrive with non-decreasing ts. A session that times out (or
    idles) is closed by an event at t >= last_ts + timeout, and timeouts are >= 1 s, so the next
    session starts strictly after end_ts. A terminate or force quit can be followed by an event
    at the very same millisecond as the session's last one, so there the bound is not strict.
    """
    with offline_run(generated.data) as (_, outputs):
        ends: dict[Key, list[Record]] = defaultdict(list)
        starts: dict[Key, list[Record]] = defaultdict(list)
        for record in outputs["sessions"]:
            (ends if record["type"] == "session_end" else starts)[_key(record)].append(record)
        for key, key_ends in ends.items():
            for end, following in zip(key_ends, starts[key][1:], strict=False):
                assert end["start_ts"] <= end["end_ts"] <= following["start_ts"], key
                if end["end_reason"] in ("timeout", "idle"):
                    assert end["end_ts"] < following["start_ts"], key
        for event in outputs["enriched"]:
            assert event["ts"] >= event["session_start_ts"]


@PROPERTY_SETTINGS
@given(generated_inputs())
def test_every_line_and_every_event_is_accounted_for(generated: Generated) -> None:
    model = RulesModel()
    verdicts = [(model.apply(event), line, index) for event, line, index in generated.valid]
    outcomes = Counter(verdict.outcome for verdict, _, _ in verdicts)
    expected_not_numeric = sorted(
        (line, index) for v, line, index in verdicts if v.outcome == "attribute_not_numeric"
    )
    with offline_run(generated.data) as (_, outputs):
        summary, dead = outputs["summary"], outputs["dead_letter"]
        not_numeric = [d for d in dead if d["reason"] == "attribute_not_numeric"]
        whole = [d for d in dead if d["index"] is None and d not in not_numeric]
        per_event = [d for d in dead if d not in whole]
        lines = len(generated.lines)
        messages_with_events = lines - len(generated.whole_bad)
        # lines = whole-message dead letters + messages with events
        assert summary["lines"] == lines == len(whole) + messages_with_events
        assert sorted((d["line"], d["reason"]) for d in whole) == sorted(generated.whole_bad)
        in_batch = sorted(
            (d["line"], d["index"], d["reason"]) for d in per_event if d not in not_numeric
        )
        assert in_batch == sorted(generated.batch_bad)
        assert sorted((d["line"], d["index"]) for d in not_numeric) == expected_not_numeric
        # events = enriched + duplicates + per-event dead letters
        assert generated.event_count == (
            len(outputs["enriched"]) + summary["duplicates"] + len(per_event)
        )
        assert len(outputs["enriched"]) == outcomes["applied"] == summary["events_applied"]
        assert summary["duplicates"] == outcomes["duplicate"]
        applied = [
            (event, v)
            for (v, _, _), (event, _, _) in zip(verdicts, generated.valid, strict=True)
            if v.outcome == "applied"
        ]
        for record, (event, verdict) in zip(outputs["enriched"], applied, strict=True):
            assert {k: v for k, v in record.items() if k not in SESSION_FIELDS} == event
            assert (record["session_number"], record["session_seq"]) == (
                verdict.session_number,
                verdict.session_seq,
            )
        for record in dead:
            assert 1 <= record["line"] <= lines


@PROPERTY_SETTINGS
@given(generated_inputs())
def test_same_input_twice_gives_byte_identical_outputs(generated: Generated) -> None:
    with offline_run(generated.data) as (first_dir, _), offline_run(generated.data) as (second, _):
        names = sorted(p.relative_to(first_dir) for p in first_dir.rglob("*") if p.is_file())
        assert names == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
        for name in names:
            assert (first_dir / name).read_bytes() == (second / name).read_bytes(), name


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(generated_inputs())
def test_every_partner_record_of_generated_input_matches_its_schema(generated: Generated) -> None:
    with offline_run(generated.data, ALL_PARTNERS) as (_, outputs):
        canonical = outputs["partners"]["canonical"]
        # The canonical partner gets every record of section 4, in emission order.
        assert sorted(map(orjson.dumps, canonical)) == sorted(
            map(orjson.dumps, outputs["sessions"] + outputs["enriched"])
        )
        assert [r for r in canonical if r["type"] in ("session_start", "session_end")] == (
            outputs["sessions"]
        )
        assert [r for r in canonical if "session_seq" in r] == outputs["enriched"]
        for name, records in outputs["partners"].items():
            assert records or not outputs["enriched"], f"partner {name} got nothing"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
event_like = st.dictionaries(
    st.sampled_from(("event_id", "app_id", "device_id", "type", "ts", "events", "attribute")),
    json_values,
).map(lambda document: json.dumps(document).encode())  # stdlib: any int, NaN/Infinity too
arbitrary_lines = st.one_of(
    st.binary(max_size=80), st.text(max_size=40).map(str.encode), event_like
).map(lambda line: line.replace(b"\n", b" "))


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(st.booleans(), arbitrary_lines), max_size=25))
def test_arbitrary_bytes_never_crash_and_every_line_is_dead_lettered_or_applied(
    lines: list[tuple[bool, bytes]],
) -> None:
    # Interleave valid events of one device (flag True) with arbitrary lines (flag False).
    messages: list[bytes] = []
    valid_ids: list[str] = []
    for number, (valid, arbitrary) in enumerate(lines):
        if valid:
            event = {"event_id": f"v{number}", "app_id": "app-a", "device_id": "dev-1"}
            event.update(type="screen_view", ts=T0 + number * 1000)
            messages.append(orjson.dumps(event))
            valid_ids.append(f"v{number}")
        else:
            messages.append(arbitrary)
    with offline_run(b"".join(m + b"\n" for m in messages)) as (_, outputs):
        assert outputs["summary"]["lines"] == len(messages)
        dead_lines = defaultdict(list)
        for record in outputs["dead_letter"]:
            dead_lines[record["line"]].append(record)
        for number, ((valid, _), message) in enumerate(zip(lines, messages, strict=True), start=1):
            if valid:
                assert number not in dead_lines
                continue
            whole = [d for d in dead_lines[number] if d["index"] is None]
            if whole:
                [record] = whole
                payload = record["payload"]
                if record["payload_encoding"] == "base64":
                    assert base64.b64decode(payload) == message
                else:
                    assert payload.encode("utf-8") == message
                continue
            # Not rejected whole: only a batch (an object with an events array) can be that.
            document = orjson.loads(message)
            assert isinstance(document, dict) and isinstance(document.get("events"), list)
            assert "type" not in document
        assert [
            r["event_id"] for r in outputs["enriched"] if r["event_id"] in valid_ids
        ] == valid_ids
