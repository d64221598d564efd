"""Fuzz inputs for the pipeline (SPEC sections 1-3), and an oracle that accounts for them.

Generation starts from valid events and batches and breaks them: byte flips, insertions,
deletions, repeats and truncation; a wrong type, size or value for each field; required fields
dropped; number tokens past every range (2**64, 1e400, -0, 1e-400, NaN, Infinity); nesting of
arrays and objects from just around `max_depth` up to 1000 levels; Unicode (lone and reversed
surrogate escapes, non-BMP characters raw and escaped, raw and escaped control characters,
invalid UTF-8, BOMs, U+2028); messages of exactly, just under and just over `max_event_bytes`,
and ones that grow when written back (`1e9` is written 1000000000.0); framing (whitespace,
trailing bytes, two documents, duplicate keys, empty lines); batches mixing good events, bad
ones, non-objects and re-sends; exact and same-id re-sends of earlier events.

Every choice goes through a `Pick`: `DrawPick` draws it from Hypothesis (so failures shrink),
`RandomPick` from a seeded `random.Random` (the worker test: thousands of messages, one seed).

The oracle (`account_for`) reads each line the way SPEC section 1 describes it, with
independent tools (orjson for "parseable JSON", the reference `jsonschema` library over
`schemas/` for the field rules, an iterative depth count, the documented ts range and sizes),
and walks the outputs: each line is rejected whole, or each of its events is applied (the next
enriched record is that event plus its session fields), a duplicate (an event id already
applied to the device key) or a dead letter with an allowed reason and its index. Dead-letter
payloads are checked against the cap and the original bytes.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from hypothesis import strategies as st

from tests.schema_check import validator

T = TypeVar("T")
Record = dict[str, Any]
Key = tuple[str, str]

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
ACCEPTED = "accepted"  # an outcome: applied or a duplicate (not a dead letter)
SESSION_FIELDS = ("session_id", "session_number", "session_seq", "session_start_ts")
REASONS = frozenset(
    (
        "malformed_json",
        "invalid_event",
        "timestamp_out_of_range",
        "too_large",
        "attribute_not_numeric",
    )
)
TYPES = (
    "app_launch",
    "app_foreground",
    "app_background",
    "app_terminate",
    "session_attribute",
    "screen_view",
    "custom_event",
    "commerce_event",
)
GAPS = (0, 1, 700, 5_000, 59_999, 60_000, 61_000)


# --- where choices come from -----------------------------------------------------------------


class DrawPick:
    """Choices drawn from Hypothesis: each shrinks towards the first option / no mutation."""

    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self._draw(st.integers(lo, hi))

    def choice(self, options: Sequence[T]) -> T:
        return self._draw(st.sampled_from(options))

    def chance(self, percent: int) -> bool:
        return self._draw(st.integers(0, 99)) >= 100 - percent

    def raw(self, lo: int, hi: int) -> bytes:
        return self._draw(st.binary(min_size=lo, max_size=hi))


class RandomPick:
    """Choices from a seeded `random.Random`: the same seed, the same messages."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self._rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return options[self._rng.randrange(len(options))]

    def chance(self, percent: int) -> bool:
        return self._rng.randrange(100) < percent

    def raw(self, lo: int, hi: int) -> bytes:
        return bytes(self._rng.randrange(256) for _ in range(self._rng.randint(lo, hi)))


Pick = DrawPick | RandomPick


# --- documents with raw tokens ---------------------------------------------------------------


@dataclass
class Doc:
    """A JSON document to send, with raw byte snippets that orjson could not write itself.

    Each placeholder string in `value` is replaced, once serialized, by its bytes in `raws`
    (a number token such as 1e400, an invalid escape, bytes that are not UTF-8...).
    """

    value: Any
    raws: dict[str, bytes] = field(default_factory=dict)

    def render(self) -> bytes:
        data = orjson.dumps(self.value)
        for placeholder, raw in self.raws.items():
            data = data.replace(placeholder.encode(), raw)
        return data


class Placeholders:
    def __init__(self) -> None:
        self.count = 0

    def new(self) -> str:
        self.count += 1
        return f"@@raw{self.count}@@"


@dataclass
class Line:
    """One generated message: its bytes, its Kafka key, and what it was built to provoke.

    `expect` (None: no intent) is the set of allowed outcomes of a line that is one event or
    that must be rejected whole (ACCEPTED or reason codes); `entry_expect` the same per batch
    index. The oracle checks every line whatever its intent; the intents catch a parser that
    agrees with the oracle's parser on something the SPEC disagrees with.
    """

    data: bytes
    key: bytes | None
    kind: str
    expect: frozenset[str] | None = None
    entry_expect: dict[int, frozenset[str]] = field(default_factory=dict)


def outcomes(*names: str) -> frozenset[str]:
    return frozenset(names)


@dataclass
class FuzzContext:
    """What a generator knows: limits, clocks per device key, valid events sent so far."""

    now_ms: int
    t0: int
    max_event_bytes: int
    max_depth: int
    max_future_skew_ms: int = 86_400_000
    apps: tuple[str, ...] = ("app-a", "app-b")
    devices: tuple[str, ...] = ("dev-1", "dev-2", "dev-3")
    id_prefix: str = "e"
    exact_now: bool = True  # the run's processing time is now_ms exactly (offline tests)
    max_batch: int = 5
    max_deep: int = 1000
    # Per-event session_timeout_s values (streaming tests keep them short: a session open at
    # the end only closes live, at its deadline).
    event_timeouts: tuple[float, ...] = (30, 90, 1, 86400, 2.5)
    clocks: dict[Key, int] = field(default_factory=dict)
    sent: dict[Key, list[Record]] = field(default_factory=lambda: defaultdict(list))
    sent_lines: list[tuple[bytes, bytes]] = field(default_factory=list)
    counter: int = 0
    placeholders: Placeholders = field(default_factory=Placeholders)

    def new_id(self) -> str:
        self.counter += 1
        return f"{self.id_prefix}{self.counter}"


# --- valid events ----------------------------------------------------------------------------


def pick_key(pick: Pick, ctx: FuzzContext) -> Key:
    return pick.choice(ctx.apps), pick.choice(ctx.devices)


def valid_event(pick: Pick, ctx: FuzzContext, key: Key) -> Record:
    """A valid event of device `key`, a little later than its previous one."""
    previous = ctx.clocks.get(key)
    ts = (ctx.t0 + pick.integer(0, 60_000)) if previous is None else previous + pick.choice(GAPS)
    ctx.clocks[key] = ts
    kind = pick.choice(TYPES)
    event: Record = {
        "event_id": ctx.new_id(),
        "app_id": key[0],
        "device_id": key[1],
        "type": kind,
        "ts": ts,
    }
    if kind == "session_attribute":
        name = pick.choice(("level", "plan"))
        if pick.chance(50):
            value = pick.choice(("pro", 3, 2.5, True, None, ""))
            event["attribute"] = {"op": "set", "key": name, "value": value}
        else:
            value = pick.choice((1, -2, 0.5, 1e300))
            event["attribute"] = {"op": "increment", "key": name, "value": value}
    if kind in ("screen_view", "custom_event", "commerce_event") and pick.chance(70):
        event["name"] = pick.choice(("home", "cart", "checkout"))
    if pick.chance(30):
        event["user_id"] = pick.choice((None, "u1", "u2"))
    if pick.chance(40):
        event["attributes"] = pick.choice(
            ({"sku": "a-1"}, {"n": 1, "tags": ["x", "y"]}, {"cart": [{"sku": "a", "qty": 2}]}, {})
        )
    if pick.chance(10):
        event["session_timeout_s"] = pick.choice(ctx.event_timeouts)
    if pick.chance(10):
        event["sdk"] = {"os": pick.choice(("ios", "android")), "v": [1, 2]}
    return event


def remember(ctx: FuzzContext, event: Record, line: bytes | None = None) -> None:
    key = (event["app_id"], event["device_id"])
    ctx.sent[key].append(event)
    if line is not None:
        ctx.sent_lines.append((key[1].encode(), line))


# --- mutations of one event (as a document) --------------------------------------------------

_LONG = "x" * 129
WRONG_VALUES: dict[str, tuple[Any, ...]] = {
    "event_id": (1, None, [], {}, "", _LONG, True, 1.5, ["e1"]),
    "app_id": (1, None, [], {}, "", _LONG, False),
    "device_id": (1, None, [], {}, "", "d" * 257, 0.0),
    "type": ("app_crash", "", 1, None, ["app_launch"], "APP_LAUNCH", "app_launch "),
    "ts": ("1790000000000", 1.5, True, None, [], {}, "", 1790000000000.25),
    "user_id": (1, [], {}, True, 0.5),
    "name": (1, None, [], {}, False),
    "attributes": ([], "x", 1, None, True, [{"a": 1}]),
    "session_timeout_s": (0, 0.5, 86401, -1, "60", None, True, [], 1e300),
    "attribute": (
        None,
        "set",
        [],
        {"op": "set", "key": "k"},
        {"op": "add", "key": "k", "value": 1},
        {"op": "increment", "key": "k", "value": "1"},
        {"op": "increment", "key": "k", "value": True},
        {"op": "set", "key": "", "value": 1},
        {"op": "set", "key": "k", "value": [1]},
        {"op": "set", "key": "k", "value": {}},
        {"op": "set", "key": "k", "value": 1, "extra": 1},
        {"op": "set", "key": "k" * 257, "value": 1},
        {"op": "set", "key": 5, "value": 1},
    ),
}
REQUIRED = ("event_id", "app_id", "device_id", "type", "ts")

# Number tokens: (token, parseable by orjson). Tokens that are valid JSON grammar but past what
# a double holds (1e400) may be rejected as malformed_json or as invalid_event.
NUMBER_TOKENS: tuple[tuple[bytes, bool], ...] = (
    (b"18446744073709551616", True),  # 2**64
    (b"18446744073709551615", True),  # 2**64 - 1
    (b"-9223372036854775809", True),  # -2**63 - 1
    (b"9223372036854775808", True),
    (b"1" + b"0" * 30, True),
    (b"123456789012345678901234567890.5", True),
    (b"1e308", True),
    (b"-1e308", True),
    (b"1e-400", True),
    (b"2.5e-324", True),
    (b"-0", True),
    (b"-0.0", True),
    (b"0e0", True),
    (b"1E+2", True),
    (b"1" + b"0" * 400, False),
    (b"1e400", False),
    (b"-1e400", False),
    (b"NaN", False),
    (b"Infinity", False),
    (b"-Infinity", False),
    (b"nan", False),
    (b"0x10", False),
    (b"01", False),
    (b"+1", False),
    (b".5", False),
    (b"1.", False),
    (b"1e", False),
    (b"--1", False),
)

# Snippets put inside a JSON string: (bytes, valid JSON text).
STRING_SNIPPETS: tuple[tuple[bytes, bool], ...] = (
    (b"\\ud800", False),  # lone high surrogate escape
    (b"\\udfff", False),  # lone low surrogate escape
    (b"\\ud800\\ud800", False),
    (b"\\udc00\\ud800", False),  # reversed pair
    (b"\\ud800\\u0041", False),
    (b"\\ud83d\\ude00", True),  # a non-BMP character as an escaped pair
    (b"\\uD83D\\uDE00", True),
    ("\U0001f600".encode(), True),  # raw non-BMP
    ("\U0010ffff".encode(), True),
    (b"\\u0000", True),  # escaped control characters are fine
    (b"\\u001f\\u0007", True),
    (b"\x00", False),  # raw control characters are not
    (b"\x01", False),
    (b"\x1f", False),
    (b"\t", False),
    (b"\r", False),
    (b"\x7f", True),
    (b"\xff", False),  # not UTF-8
    (b"\xfe\xff", False),
    (b"\xc0\x80", False),  # overlong NUL
    (b"\xed\xa0\x80", False),  # a surrogate encoded in UTF-8
    (b"\xf4\x90\x80\x80", False),  # past U+10FFFF
    (b"\xe9", False),  # Latin-1
    (b"\xc3", False),  # a cut sequence
    (b"\xe2\x80\xa8", True),  # U+2028
    (b"\xef\xbb\xbf", True),  # a BOM inside a string
    ("\u00e9\u4e2d".encode(), True),
    (b'\\"', True),
    (b"\\/\\\\", True),
    (b"\\x41", False),
    (b"\\u12", False),
)

# Whole lines that frame a valid event oddly: (wrap, valid JSON).
FRAMINGS: tuple[tuple[Callable[[bytes], bytes], bool], ...] = (
    (lambda d: b" \t" + d + b" \r", True),
    (lambda d: b"\xef\xbb\xbf" + d, False),  # a BOM
    (lambda d: d + b"x", False),
    (lambda d: d + d, False),
    (lambda d: d + b",", False),
    (lambda d: b"[" + d + b"]", True),  # valid JSON, not an object: malformed_json
    (lambda d: d[:-1] + b',"event_id":"dup-key"}', True),  # duplicate key: the last one counts
    (lambda d: d.replace(b":", b" : "), True),
    (lambda d: d.replace(b",", b",\r"), True),
)
GARBAGE: tuple[bytes, ...] = (
    b"",
    b" ",
    b"\r",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"[1, 2]",
    b'"event"',
    b"42",
    b"{",
    b"}",
    b'{"events": null}',
    b'{"events": []}',
    b'{"events": [[]], "app_id": "app-a", "device_id": "dev-1"}',
    b"\x00\x00\x00",
    b"\xff\xfe\xfd",
)


def _set_string_snippet(ctx: FuzzContext, event: Record, where: str, snippet: bytes) -> Doc:
    placeholder = ctx.placeholders.new()
    doc = Doc(event, {placeholder: snippet})
    if where == "attribute key":
        event["attributes"] = {f"k{placeholder}": 1}
    elif where == "attribute value":
        event["attributes"] = {"k": f"v{placeholder}"}
    elif where == "name":
        event["name"] = f"sc{placeholder}reen"
    else:
        event[where] = f"{event.get(where) or 'u'}{placeholder}"
    return doc


def nest(shape: str, levels: int) -> bytes:
    """`levels` nested containers: arrays, objects, or alternating (objects first)."""
    opens: list[bytes] = []
    for level in range(levels):
        as_object = shape == "objects" or (shape == "mixed" and level % 2 == 0)
        opens.append(b'{"k":' if as_object else b"[")
    closes = [b"}" if o.startswith(b"{") else b"]" for o in reversed(opens)]
    return b"".join(opens) + b"1" + b"".join(closes)


def deep_levels(pick: Pick, ctx: FuzzContext, around: int) -> int:
    """Nesting levels to add: around the limit (`around` = levels that reach it), or far."""
    if pick.chance(40):
        return max(1, around + pick.integer(-2, 2))
    # 254/255 levels are where JSON writers stop (orjson writes at most 254).
    return pick.choice((30, 64, 128, 200, 254, 255, 256, 257, 300, ctx.max_deep))


# Where deep nesting goes: where the schema allows any value, and where it is the wrong type
# too (the schema's error then holds a deep value: explaining it must not fail).
WRONG_DEEP_PLACES = ("event_id", "ts", "name", "user_id", "attributes as array", "without ts")
DEEP_PLACES = ("attributes", "payload", "in list", "attributes root", *WRONG_DEEP_PLACES)


def mutate_document(pick: Pick, ctx: FuzzContext, event: Record) -> tuple[Doc, frozenset[str]]:
    """One structural mutation of a valid event that keeps it a JSON object (or says it won't).

    Returns the document and the allowed outcomes for it as one message.
    """
    invalid = outcomes("invalid_event")
    how = pick.choice(("wrong", "drop", "number", "deep", "deep", "unicode", "ts", "unknown"))
    if how == "wrong":
        name = pick.choice(tuple(WRONG_VALUES))
        event[name] = pick.choice(WRONG_VALUES[name])
        return Doc(event), invalid
    if how == "drop":
        name = pick.choice((*REQUIRED, "attribute"))
        if name == "attribute":
            event["type"] = "session_attribute"
        event.pop(name, None)
        return Doc(event), invalid
    if how == "number":
        token, parses = pick.choice(NUMBER_TOKENS)
        where = pick.choice(("ts", "session_timeout_s", "attributes", "sdk", "attribute", "name"))
        placeholder = ctx.placeholders.new()
        if where == "attributes":
            event["attributes"] = {"n": placeholder, "list": [1, placeholder]}
        elif where == "attribute":
            event["type"] = "session_attribute"
            op = pick.choice(("set", "increment"))
            event["attribute"] = {"op": op, "key": "level", "value": placeholder}
        else:
            event[where] = placeholder
        doc = Doc(event, {f'"{placeholder}"': token})
        if not parses:
            return doc, outcomes("malformed_json", "invalid_event")
        if where == "name":
            return doc, invalid
        return doc, frozenset()  # the oracle knows: a range, a type, or fine
    if how == "deep":
        shape = pick.choice(("arrays", "objects", "mixed"))
        where = pick.choice(DEEP_PLACES)
        base = 3 if where == "in list" else 2 if where == "attributes" else 1
        levels = deep_levels(pick, ctx, ctx.max_depth - base)
        if where == "attributes root":
            shape = "objects" if shape == "arrays" else shape
        if where == "attributes as array":
            shape = "arrays"
        placeholder = ctx.placeholders.new()
        raw = nest(shape, levels)
        if where == "attributes":
            event["attributes"] = {"deep": placeholder}
        elif where == "in list":
            event["attributes"] = {"list": [0, placeholder, 2]}
        elif where in ("attributes root", "attributes as array"):
            event["attributes"] = placeholder
        elif where == "without ts":
            event.pop("ts")
            event["payload"] = placeholder
        else:  # an unknown field, or (wrong type) a schema field
            event[where] = placeholder
        doc = Doc(event, {f'"{placeholder}"': raw})
        if where in WRONG_DEEP_PLACES:
            return doc, invalid  # the wrong type, however deep
        return doc, invalid if base + levels > ctx.max_depth else outcomes(ACCEPTED)
    if how == "unicode":
        snippet, valid_json = pick.choice(STRING_SNIPPETS)
        where = pick.choice(
            ("name", "event_id", "user_id", "attribute key", "attribute value", "device_id")
        )
        doc = _set_string_snippet(ctx, event, where, snippet)
        if not valid_json:
            return doc, outcomes("malformed_json")
        return doc, outcomes(ACCEPTED)
    if how == "ts":
        skew = ctx.max_future_skew_ms
        if ctx.exact_now:
            values = (
                (MIN_TS_MS - 1, "timestamp_out_of_range"),
                (MIN_TS_MS, ACCEPTED),
                (ctx.now_ms + skew, ACCEPTED),
                (ctx.now_ms + skew + 1, "timestamp_out_of_range"),
            )
        else:
            values = ()
        values += (
            (0, "timestamp_out_of_range"),
            (-1, "timestamp_out_of_range"),
            (-(2**63), "timestamp_out_of_range"),
            (2**63 - 1, "timestamp_out_of_range"),
            (2**64 - 1, "timestamp_out_of_range"),
            (ctx.now_ms + 10 * skew, "timestamp_out_of_range"),
            (float(event["ts"]), ACCEPTED),  # 1.79e12 as a float is still an integer
        )
        event["ts"], outcome = pick.choice(values)
        return Doc(event), outcomes(outcome)
    # unknown extra fields pass through
    event[pick.choice(("extra", "Event_Id", "", "\u00e9", "ts "))] = pick.choice(
        ([1, {"a": None}], "x", None, {"nested": {"ok": True}})
    )
    return Doc(event), outcomes(ACCEPTED)


def byte_mutation(pick: Pick, data: bytes) -> bytes:
    """Flip, insert, delete, repeat or truncate bytes; the result stays one line."""
    how = pick.choice(("flip", "insert", "delete", "repeat", "truncate"))
    position = pick.integer(0, max(0, len(data) - 1))
    if how == "flip":
        mutated = bytearray(data)
        if mutated:
            mutated[position] ^= pick.integer(1, 255)
        result = bytes(mutated)
    elif how == "insert":
        result = data[:position] + pick.raw(1, 8) + data[position:]
    elif how == "delete":
        result = data[:position] + data[position + pick.integer(1, 16) :]
    elif how == "repeat":
        size = pick.integer(1, 24)
        result = data[:position] + data[position : position + size] * 2 + data[position + size :]
    else:
        result = data[:position]
    return result.replace(b"\n", b"\x0b")


def sized_event(pick: Pick, ctx: FuzzContext, event: Record, target: int) -> bytes | None:
    """`event` padded (in `name`) to exactly `target` bytes, or None when it cannot be."""
    event["type"] = pick.choice(("screen_view", "custom_event"))
    event.pop("attribute", None)
    event["name"] = ""
    room = target - len(orjson.dumps(event))
    if room < 0:
        return None
    unit = pick.choice(("x", "\u00e9", "\u4e2d", "\U0001f600", '"', "\u0001"))
    unit_bytes = len(orjson.dumps(unit)) - 2
    count = room // unit_bytes if pick.chance(50) else 0
    event["name"] = unit * count + "x" * (room - count * unit_bytes)
    data = orjson.dumps(event)
    assert len(data) == target, (len(data), target)
    return data


def growing_event(ctx: FuzzContext, event: Record, token: bytes) -> bytes:
    """An event at most max_event_bytes long whose numbers are written back longer."""
    event["attributes"] = {"g": []}
    base = len(orjson.dumps(event))
    count = max(1, (ctx.max_event_bytes - base) // (len(token) + 1))
    data = orjson.dumps(event).replace(b'"g":[]', b'"g":[' + b",".join([token] * count) + b"]")
    while len(data) > ctx.max_event_bytes and count > 1:
        count -= 1
        data = orjson.dumps(event).replace(b'"g":[]', b'"g":[' + b",".join([token] * count) + b"]")
    return data


# --- lines -----------------------------------------------------------------------------------


SINGLE_KINDS = (
    *("valid", "valid", "document", "document", "bytes", "size", "grow", "frame"),
    *("resend", "resend"),
)


def single_line(pick: Pick, ctx: FuzzContext) -> Line:
    """One event as one message: valid, or mutated one way."""
    key = pick_key(pick, ctx)
    wire_key = key[1].encode()
    event = valid_event(pick, ctx, key)
    how = pick.choice(SINGLE_KINDS)
    if how == "valid":
        data = orjson.dumps(event)
        remember(ctx, event, data)
        return Line(data, wire_key, "valid", outcomes(ACCEPTED))
    if how == "resend" and ctx.sent_lines:
        wire_key, data = pick.choice(ctx.sent_lines)
        if pick.chance(50):
            return Line(data, wire_key, "resend", outcomes(ACCEPTED))
        # Same id and device, new content: still a duplicate when the first was applied.
        again = dict(orjson.loads(data))
        again["name"] = "again"
        return Line(orjson.dumps(again), wire_key, "resend-changed", outcomes(ACCEPTED))
    if how == "document":
        doc, expect = mutate_document(pick, ctx, event)
        data = doc.render()
        if len(data) > ctx.max_event_bytes:
            expect = outcomes("too_large")
        return Line(data, wire_key, "document", expect or None)
    if how == "bytes":
        data = byte_mutation(pick, orjson.dumps(event))
        if pick.chance(30):
            data = byte_mutation(pick, data)
        return Line(data, wire_key, "bytes")
    if how == "size":
        limit = ctx.max_event_bytes
        target = pick.choice((limit - 1, limit, limit + 1, limit + 2, limit - 64, limit * 2))
        sized = sized_event(pick, ctx, event, target)
        if sized is not None:
            expect = outcomes("too_large") if target > limit else outcomes(ACCEPTED)
            return Line(sized, wire_key, "size", expect)
        data = orjson.dumps(event)
        return Line(data, wire_key, "size-skipped", outcomes(ACCEPTED))
    if how == "grow":
        token = pick.choice((b"1e9", b"1E2", b"5e15", b"-0", b"1e-7"))
        data = growing_event(ctx, event, token)
        return Line(data, wire_key, "grow", outcomes(ACCEPTED, "too_large"))
    if how == "frame":
        wrap, valid_json = pick.choice(FRAMINGS)
        data = wrap(orjson.dumps(event))
        if not valid_json:
            return Line(data, wire_key, "frame", outcomes("malformed_json"))
        return Line(data, wire_key, "frame")
    data = orjson.dumps(event)  # a "resend" before anything was sent
    remember(ctx, event, data)
    return Line(data, wire_key, "valid", outcomes(ACCEPTED))


def batch_line(pick: Pick, ctx: FuzzContext) -> Line:
    """A batch of one device: good events, bad ones, non-objects and re-sends mixed."""
    key = pick_key(pick, ctx)
    batch: Record = {}
    if pick.chance(85):
        batch["app_id"], batch["device_id"] = key
    if pick.chance(30):
        batch["user_id"] = pick.choice((None, "u-batch"))
    entries: list[Any] = []
    entry_expect: dict[int, frozenset[str]] = {}
    raws: dict[str, bytes] = {}
    for index in range(pick.integer(0, ctx.max_batch)):
        kind = pick.choice(("valid", "valid", "valid", "resend", "document", "non-object"))
        earlier = ctx.sent[key] or [e for events in ctx.sent.values() for e in events]
        if kind == "resend" and earlier:
            entries.append(dict(pick.choice(earlier)))
            entry_expect[index] = outcomes(ACCEPTED)
            continue
        if kind == "non-object":
            entries.append(pick.choice((42, "event", None, [], [{"type": "app_launch"}], True)))
            entry_expect[index] = outcomes("invalid_event")
            continue
        event = valid_event(pick, ctx, key)
        inherit = "app_id" in batch and pick.chance(50)
        if kind == "document":
            doc, expect = mutate_document(pick, ctx, event)
            value = doc.value
            own = (value.get("app_id"), value.get("device_id")) == key
            if inherit and own:
                value.pop("app_id")
                value.pop("device_id")
            elif "app_id" not in value or "device_id" not in value:
                expect = frozenset()  # inherits what was dropped: the oracle decides
            entries.append(value)
            raws.update(doc.raws)
            if expect:
                entry_expect[index] = expect
            continue
        remember(ctx, event)
        if inherit:
            event = {k: v for k, v in event.items() if k not in ("app_id", "device_id")}
        entries.append(event)
        entry_expect[index] = outcomes(ACCEPTED)
    batch["events"] = entries
    doc = Doc(batch, raws)
    how = pick.choice(("plain", "plain", "plain", "bytes", "whole", "deep meta"))
    if how == "whole":
        batch["events"] = pick.choice(("events", {"0": entries}, None, 1))
        if pick.chance(30):
            batch["events"] = entries
            batch["app_id"] = pick.choice((1, "", None, ["app-a"]))
        data = Doc(batch, raws).render()
        expect = outcomes("invalid_event", "too_large", *(("malformed_json",) if raws else ()))
        return Line(data, key[1].encode(), "batch-whole", expect)
    if how == "deep meta":
        placeholder = ctx.placeholders.new()
        batch["meta"] = placeholder
        doc = Doc(batch, {**raws, f'"{placeholder}"': nest("mixed", pick.choice((40, 300)))})
    data = doc.render()
    if how == "bytes":
        return Line(byte_mutation(pick, data), key[1].encode(), "batch-bytes")
    if len(data) > ctx.max_event_bytes:
        return Line(data, key[1].encode(), "batch-too-large", outcomes("too_large"))
    return Line(data, key[1].encode(), "batch", None, entry_expect)


def garbage_line(pick: Pick, ctx: FuzzContext) -> Line:
    if pick.chance(50):
        return Line(pick.choice(GARBAGE), None, "garbage")
    return Line(pick.raw(0, 48).replace(b"\n", b" "), None, "random-bytes")


def fuzz_line(pick: Pick, ctx: FuzzContext) -> Line:
    kind = pick.choice(("single", "single", "single", "batch", "batch", "garbage"))
    if kind == "single":
        return single_line(pick, ctx)
    if kind == "batch":
        return batch_line(pick, ctx)
    return garbage_line(pick, ctx)


@st.composite
def fuzz_lines(
    draw: st.DrawFn, ctx_factory: Callable[[], FuzzContext], max_lines: int = 12
) -> tuple[FuzzContext, list[Line]]:
    """(context, lines): a fuzzed input file, line by line."""
    ctx = ctx_factory()
    pick = DrawPick(draw)
    lines = [fuzz_line(pick, ctx) for _ in range(draw(st.integers(1, max_lines)))]
    return ctx, lines


def as_jsonl(lines: Iterable[Line]) -> bytes:
    return b"".join(line.data + b"\n" for line in lines)


# --- the oracle ------------------------------------------------------------------------------


def depth_of(value: Any) -> int:
    """Nesting depth, the event object being level 1 (iterative: any depth)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if type(item) is dict:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item.values())
        elif type(item) is list:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


@dataclass(frozen=True)
class Limits:
    """The limits the oracle applies (mirrors pipeline.events.Limits, read independently)."""

    max_event_bytes: int
    max_depth: int
    max_dead_letter_payload_bytes: int
    max_future_skew_ms: int
    now_ms: int
    now_slack_ms: int = 0  # streaming: processing time is only known within this much


@dataclass
class Verdict:
    """What may become of one event: `required` faults (any one of them is the reason), and
    `optional` ones (the pipeline may, but need not, reject for them)."""

    required: set[str]
    optional: set[str]
    ts_near_limit: bool = False


def event_verdict(event: Any, limits: Limits) -> Verdict:
    if type(event) is not dict:
        return Verdict({"invalid_event"}, set())
    required: set[str] = set()
    optional: set[str] = set()
    near = False
    # Too deep is invalid whatever else (and the reference validator's error messages would
    # recurse through a deep value).
    if depth_of(event) > limits.max_depth or not validator("event").is_valid(event):
        required.add("invalid_event")
    ts = event.get("ts")
    if type(ts) in (int, float) and ts == ts and float(ts).is_integer():
        latest = limits.now_ms + limits.max_future_skew_ms
        if int(ts) < MIN_TS_MS or int(ts) > latest:
            required.add("timestamp_out_of_range")
        if abs(int(ts) - latest) <= limits.now_slack_ms:
            near = True
    if not required:
        try:
            written = len(orjson.dumps(event))
        except TypeError:
            written = None
        if written is None or written > limits.max_event_bytes:
            optional.add("too_large")  # grows when written back (1e9 -> 1000000000.0)
    attribute = event.get("attribute")
    increment = isinstance(attribute, dict) and attribute.get("op") == "increment"
    if event.get("type") == "session_attribute" and increment:
        optional |= {"attribute_not_numeric", "invalid_event"}  # non-number, overflow
    return Verdict(required, optional, near)


@dataclass
class ReadLine:
    """A line as the SPEC reads it: rejected whole (`whole` reasons), or its events."""

    number: int
    data: bytes
    whole: set[str] | None = None
    batch: bool = False
    # (index or None, event after inheritance, the entry as sent)
    events: list[tuple[int | None, Any, Any]] = field(default_factory=list)


def _valid_batch(document: Record) -> bool:
    try:
        return bool(validator("batch").is_valid(document))
    except RecursionError:  # only building an error's message recurses (through a deep value)
        return False


def read_line(number: int, data: bytes, limits: Limits) -> ReadLine:
    line = ReadLine(number, data)
    if len(data) > limits.max_event_bytes:
        line.whole = {"too_large"}
        return line
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        line.whole = {"malformed_json"}
        return line
    if type(document) is not dict:
        line.whole = {"malformed_json"}
        return line
    if "events" in document and "type" not in document:
        if not _valid_batch(document):
            line.whole = {"invalid_event"}
            return line
        line.batch = True
        inherited = {k: document[k] for k in ("app_id", "device_id", "user_id") if k in document}
        for index, entry in enumerate(document["events"]):
            event = {**inherited, **entry} if type(entry) is dict else entry
            line.events.append((index, event, entry))
        return line
    line.events.append((None, document, document))
    return line


@dataclass
class Accounting:
    """What the walk found, for statistics and for comparing runs."""

    lines: int = 0
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    whole: Counter[str] = field(default_factory=Counter)
    per_event: Counter[str] = field(default_factory=Counter)
    truncated: int = 0


class Mismatch(AssertionError):
    pass


def _fail(where: str, message: str, data: bytes | None = None) -> None:
    shown = (
        "" if data is None else f"\n  line bytes: {data[:300]!r}{'...' if len(data) > 300 else ''}"
    )
    raise Mismatch(f"{where}: {message}{shown}")


def payload_bytes(record: Record) -> bytes:
    """The payload bytes a dead letter carries (its text as UTF-8, or its base64 decoded)."""
    if record["payload_encoding"] == "base64":
        return base64.b64decode(record["payload"], validate=True)
    return record["payload"].encode("utf-8")


def check_payload(record: Record, originals: list[bytes], cap: int, where: str) -> bool:
    """The dead letter's payload is one of `originals`, whole or cut at `cap` as SPEC 2 says.

    Returns whether it was cut.
    """
    try:
        carried = payload_bytes(record)
    except (UnicodeEncodeError, ValueError) as exc:
        _fail(where, f"payload cannot be decoded ({exc}): {record!r:.300}")
    if len(carried) > cap:
        _fail(where, f"payload carries {len(carried)} bytes, over the cap of {cap}")
    if not record.get("payload_truncated"):
        for key in ("payload_bytes", "payload_sha256"):
            if key in record:
                _fail(where, f"{key} on a payload that was not cut: {record!r:.300}")
        if carried not in originals:
            _fail(where, f"payload {carried[:120]!r} is not the original {originals[0][:120]!r}")
        expected = "utf-8" if _is_utf8(carried) else "base64"
        if record["payload_encoding"] != expected:
            _fail(where, f"payload_encoding {record['payload_encoding']}, expected {expected}")
        return False
    if record["payload_truncated"] is not True:
        _fail(where, f"payload_truncated must be true: {record!r:.300}")
    matching = [
        o for o in originals if hashlib.sha256(o).hexdigest() == record.get("payload_sha256")
    ]
    if not matching:
        _fail(where, "payload_sha256 is not the SHA-256 of the original payload")
    original = matching[0]
    if record.get("payload_bytes") != len(original):
        _fail(where, f"payload_bytes {record.get('payload_bytes')} != {len(original)}")
    if len(original) <= cap:
        _fail(where, f"a payload of {len(original)} bytes was cut under the cap {cap}")
    if not original.startswith(carried):
        _fail(where, "the cut payload is not a prefix of the original")
    if _is_utf8(original):
        if record["payload_encoding"] != "utf-8":
            _fail(where, "a UTF-8 payload was cut into base64")
        if len(carried) < cap - 3:
            _fail(where, f"cut at {len(carried)} bytes: more than a character short of {cap}")
    elif record["payload_encoding"] != "base64" or len(carried) != cap:
        _fail(
            where, f"non-UTF-8 payload cut to {len(carried)} bytes as {record['payload_encoding']}"
        )
    return True


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _entry_originals(entry: Any, data: bytes) -> list[bytes]:
    try:
        return [orjson.dumps(entry), data]
    except TypeError:  # too deep for orjson to write: the whole message stands in for it
        return [data]


def account_for(
    lines: Sequence[Line],
    enriched: list[Record],
    dead: list[Record],
    summary: Record | None,
    limits: Limits,
    origin_line: Callable[[Record], int],
) -> Accounting:
    """Walk the input against the outputs; raise Mismatch at the first thing unaccounted for.

    `enriched` must be in application order (offline: as written). `origin_line` maps a dead
    letter to its 1-based line number.
    """
    acc = Accounting(lines=len(lines))
    dead_by_line: dict[int, list[Record]] = defaultdict(list)
    for record in dead:
        if record.get("type") != "dead_letter" or record.get("reason") not in REASONS:
            _fail("dead letter", f"not a dead letter with a known reason: {record!r:.300}")
        number = origin_line(record)
        if not 1 <= number <= len(lines):
            _fail("dead letter", f"origin {number} is not an input line: {record!r:.300}")
        dead_by_line[number].append(record)
    applied: dict[Key, dict[str, int]] = defaultdict(dict)  # key -> event_id -> session number
    latest_session: dict[Key, int] = {}
    position = 0
    cap = limits.max_dead_letter_payload_bytes
    for number, line in enumerate(lines, start=1):
        where = f"line {number} ({line.kind})"
        read = read_line(number, line.data, limits)
        records = dead_by_line.pop(number, [])
        if read.whole is not None:
            if [r["index"] for r in records] != [None]:
                _fail(where, f"expected one whole dead letter, got {records!r:.400}", line.data)
            [record] = records
            if record["reason"] not in read.whole:
                _fail(where, f"reason {record['reason']}, expected {sorted(read.whole)}", line.data)
            if line.expect is not None and record["reason"] not in line.expect:
                _fail(
                    where, f"reason {record['reason']}, built for {sorted(line.expect)}", line.data
                )
            acc.truncated += check_payload(record, [line.data], cap, where)
            acc.whole[record["reason"]] += 1
            continue
        by_index: dict[int | None, Record] = {}
        for record in records:
            index = record["index"]
            if index in by_index:
                _fail(where, f"two dead letters for index {index}", line.data)
            if read.batch and (index is None or not 0 <= index < len(read.events)):
                _fail(where, f"dead letter index {index} for a batch of {len(read.events)}")
            if not read.batch and index is not None:
                _fail(where, f"dead letter index {index} for a single event", line.data)
            by_index[index] = record
        for index, event, entry in read.events:
            acc.events += 1
            spot = where if index is None else f"{where} index {index}"
            verdict = event_verdict(event, limits)
            intent = line.expect if index is None else line.entry_expect.get(index)
            record = by_index.get(index)
            if record is not None:
                reason = record["reason"]
                allowed = verdict.required or verdict.optional
                if reason not in allowed and not verdict.ts_near_limit:
                    _fail(spot, f"dead-lettered as {reason}; allowed {sorted(allowed)}", line.data)
                if (
                    intent is not None
                    and reason not in intent | verdict.optional
                    and not verdict.ts_near_limit
                ):
                    _fail(spot, f"dead-lettered as {reason}, built for {sorted(intent)}", line.data)
                originals = [line.data] if index is None else _entry_originals(entry, line.data)
                acc.truncated += check_payload(record, originals, cap, spot)
                acc.per_event[reason] += 1
                continue
            if verdict.required and not verdict.ts_near_limit:
                _fail(spot, f"accepted, but it is {sorted(verdict.required)}", line.data)
            if intent is not None and ACCEPTED not in intent:
                _fail(spot, f"accepted, but built for {sorted(intent)}", line.data)
            key = (event["app_id"], event["device_id"])
            event_id = event["event_id"]
            candidate = enriched[position] if position < len(enriched) else None
            stripped = None
            if candidate is not None:
                stripped = {k: v for k, v in candidate.items() if k not in SESSION_FIELDS}
            if stripped == event:
                assert candidate is not None
                number_in = candidate["session_number"]
                if event_id in applied[key] and applied[key][event_id] == latest_session[key]:
                    _fail(spot, f"{event_id} applied twice in session {number_in}", line.data)
                applied[key][event_id] = number_in
                latest_session[key] = number_in
                position += 1
                acc.applied += 1
                continue
            if event_id not in applied[key]:
                _fail(
                    spot,
                    f"neither applied (next enriched: {candidate!r:.300}) nor a duplicate of "
                    f"an applied event, nor dead-lettered",
                    line.data,
                )
            acc.duplicates += 1
        leftover = set(by_index) - {index for index, _, _ in read.events}
        if leftover:
            _fail(where, f"dead letters for indices {sorted(leftover, key=str)} it does not have")
    if dead_by_line:
        _fail("dead letters", f"for lines the walk did not reach: {sorted(dead_by_line)}")
    if position != len(enriched):
        _fail(
            "enriched",
            f"{len(enriched) - position} records match no input event: {enriched[position]!r:.300}",
        )
    if summary is not None:
        got = (summary["lines"], summary["events_applied"], summary["duplicates"])
        want = (acc.lines, acc.applied, acc.duplicates)
        if got != want:
            _fail("summary", f"(lines, events_applied, duplicates) = {got}, expected {want}")
        reasons = Counter(r["reason"] for r in dead)
        if Counter(summary["dead_letters"]) != reasons:
            _fail("summary", f"dead_letters {summary['dead_letters']} != {dict(reasons)}")
    return acc
