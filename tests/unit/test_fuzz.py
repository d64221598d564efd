"""Fuzzing offline mode (SPEC sections 1-3: "No message can stop the pipeline").

Inputs come from tests/fuzz_strategies.py: valid events and batches, broken in every way a
client or a network can break them (see that module). For each input the run must finish,
and the outputs must account for every line: rejected whole with an allowed reason and its
line, or each of its events applied (its enriched record), a duplicate (counted), or a dead
letter with an allowed reason, its line and its batch index. Dead letters carry at most
`max_dead_letter_payload_bytes` of payload, cut on a character boundary with
`payload_truncated`, `payload_bytes` and `payload_sha256`. Every record written is strict JSON
(orjson reads it back), matches its schema, and is no larger than `Limits.max_record_bytes`.

Runs are deterministic (`derandomize=True`, no example database), with small limits
(`max_event_bytes` 8 KiB; dead-letter caps down to 1 byte, under the config file's minimum,
to test the cut itself) so that a run takes milliseconds.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

from pipeline.config import Config
from pipeline.engine import SessionConfig
from pipeline.input import Limits
from pipeline.offline import run_offline
from tests import fuzz_strategies as fz
from tests.schema_check import canonical_schema, check_record, partner_formats

NOW = 1_790_000_000_000  # the processing time of every run
T0 = NOW - 3_600_000  # event times start an hour earlier
MAX_EVENT_BYTES = 8192
SKEW_MS = 86_400_000
STALL_S = 5.0  # a run of a few lines that takes longer is stuck

# No shrinking by default: shrinking a failure of a 12-line input takes minutes, and every
# failure names its line (a crash: the line that crashes alone). SESSIONIZE_FUZZ_SHRINK=1
# shrinks, for a minimal example.
PHASES = [Phase.explicit, Phase.generate, Phase.target]
if os.environ.get("SESSIONIZE_FUZZ_SHRINK") == "1":
    PHASES.append(Phase.shrink)
FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    phases=PHASES,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Record = dict[str, Any]


def make_config(
    max_depth: int = 32, payload_cap: int = 65_536, sessions: SessionConfig | None = None
) -> Config:
    limits = Limits(
        max_event_bytes=MAX_EVENT_BYTES,
        max_depth=max_depth,
        max_dead_letter_payload_bytes=payload_cap,
    )
    return Config(sessions=sessions or SessionConfig(), limits=limits)  # all five partners


def oracle_limits(config: Config) -> fz.Limits:
    return fz.Limits(
        max_event_bytes=config.limits.max_event_bytes,
        max_depth=config.limits.max_depth,
        max_dead_letter_payload_bytes=config.limits.max_dead_letter_payload_bytes,
        max_future_skew_ms=SKEW_MS,
        now_ms=NOW,
    )


@dataclass
class Run:
    summary: Record
    sessions: list[Record]
    enriched: list[Record]
    dead: list[Record]
    partners: dict[str, list[Record]]
    raw_lines: dict[str, list[bytes]]  # file name -> its lines as written


def _read(path: Path) -> tuple[list[Record], list[bytes]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path.name}: last record has no newline"
    lines = data.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = orjson.loads(line)  # strict JSON: no NaN, no lone surrogates, UTF-8
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"{path.name} line {number} is not JSON: {exc}") from None
        assert type(record) is dict, f"{path.name} line {number} is not an object"
        records.append(record)
    return records, lines


def _crashing_line(data: bytes, config: Config) -> bytes | None:
    for line in data.split(b"\n"):
        with tempfile.TemporaryDirectory() as directory:
            try:
                run_offline(io.BytesIO(line + b"\n"), Path(directory), config, NOW)
            except Exception:
                return line
    return None


def run(data: bytes, config: Config) -> Run:
    """Run offline mode in-process; any exception is the bug this suite looks for."""
    with tempfile.TemporaryDirectory() as directory:
        output_dir = Path(directory)
        started = time.monotonic()
        try:
            run_offline(io.BytesIO(data), output_dir, config, NOW)
        except Exception as exc:
            culprit = _crashing_line(data, config)
            raise AssertionError(
                f"offline run crashed: {type(exc).__name__}: {exc}\n"
                f"the line that crashes it alone: {culprit!r}\ninput: {data[:2000]!r}"
            ) from exc
        elapsed = time.monotonic() - started
        assert elapsed < STALL_S, f"{len(data)} bytes took {elapsed:.1f} s: {data[:2000]!r}"
        raw: dict[str, list[bytes]] = {}
        parsed: dict[str, list[Record]] = {}
        names = ["sessions", "enriched", "dead_letter"]
        names += [f"partners/{p.name}" for p in config.partners]
        for name in names:
            parsed[name], raw[name] = _read(output_dir / f"{name}.jsonl")
        summary = orjson.loads((output_dir / "summary.json").read_bytes())
    return Run(
        summary=summary,
        sessions=parsed["sessions"],
        enriched=parsed["enriched"],
        dead=parsed["dead_letter"],
        partners={p.name: parsed[f"partners/{p.name}"] for p in config.partners},
        raw_lines=raw,
    )


def account(lines: list[fz.Line], result: Run, config: Config) -> fz.Accounting:
    accounting = fz.account_for(
        lines,
        result.enriched,
        result.dead,
        result.summary,
        oracle_limits(config),
        origin_line=lambda record: record["line"],
    )
    for record in result.dead:
        assert "topic" not in record and "partition" not in record, record
    # Sessions: every enriched event's session started and ended (offline closes all at end).
    starts = {r["session_id"] for r in result.sessions if r["type"] == "session_start"}
    ends = {r["session_id"] for r in result.sessions if r["type"] == "session_end"}
    assert starts == ends
    assert {r["session_id"] for r in result.enriched} <= starts
    assert result.summary["sessions_started"] == len(starts)
    return accounting


@st.composite
def scenarios(draw: st.DrawFn, max_lines: int = 12) -> tuple[Config, list[fz.Line]]:
    max_depth = draw(st.sampled_from((32, 32, 8, 128)))
    # Limits built directly: caps under the config file's minimum (1024) test the cut itself.
    cap = draw(st.sampled_from((65_536, 1024, 512, 40, 7, 1)))
    config = make_config(max_depth, cap)

    def context() -> fz.FuzzContext:
        return fz.FuzzContext(
            now_ms=NOW, t0=T0, max_event_bytes=MAX_EVENT_BYTES, max_depth=max_depth
        )

    _, lines = draw(fz.fuzz_lines(context, max_lines))
    return config, lines


def _statistics(lines: list[fz.Line], accounting: fz.Accounting) -> None:
    for line in lines:
        event(f"line: {line.kind}")
    for reason in accounting.whole | accounting.per_event:
        event(f"dead letter: {reason}")
    if accounting.duplicates:
        event("has duplicates")
    if accounting.truncated:
        event("has cut payloads")


# --- properties ------------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(scenarios())
def test_fuzzed_input_never_stops_the_run_and_every_line_is_accounted_for(
    scenario: tuple[Config, list[fz.Line]],
) -> None:
    config, lines = scenario
    result = run(fz.as_jsonl(lines), config)
    accounting = account(lines, result, config)
    per_event = sum(accounting.per_event.values())
    assert accounting.events == accounting.applied + accounting.duplicates + per_event
    assert result.summary["lines"] == len(lines)
    _statistics(lines, accounting)


@settings(FUZZ_SETTINGS, max_examples=60)
@given(scenarios())
def test_every_record_of_a_fuzzed_run_is_json_that_matches_its_schema_and_fits(
    scenario: tuple[Config, list[fz.Line]],
) -> None:
    config, lines = scenario
    result = run(fz.as_jsonl(lines), config)
    largest = config.limits.max_record_bytes
    formats = partner_formats(config.partners)
    checked: list[tuple[str, list[Record], Any]] = [
        ("sessions", result.sessions, canonical_schema),
        ("enriched", result.enriched, lambda _: "enriched_event"),
        ("dead_letter", result.dead, lambda _: "dead_letter"),
    ]
    for name, records in result.partners.items():
        checked.append((f"partners/{name}", records, lambda _, f=formats[name]: f"partners/{f}"))
    for name, records, schema_of in checked:
        for record, line in zip(records, result.raw_lines[name], strict=True):
            check_record(record, schema_of(record))
            assert len(line) <= largest, f"{name}: a {len(line)}-byte record, over {largest}"
    for name, records in result.partners.items():
        assert result.summary["partner_records"].get(name, 0) == len(records), name


@settings(FUZZ_SETTINGS, max_examples=100)
@given(
    st.sampled_from((1, 2, 3, 4, 5, 16, 63, 64, 65)),
    st.lists(
        st.tuples(
            st.sampled_from(("x", "\u00e9", "\u4e2d", "\U0001f600", "\\u0000", "\xff")),
            st.integers(0, 40),
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_dead_letter_payloads_are_cut_at_the_cap_on_a_character_boundary(
    cap: int, pieces: list[tuple[str, int]], in_batch: bool
) -> None:
    """Rejected payloads of every length around the cap, in 1-4 byte characters and non-UTF-8."""
    text = "".join(piece * count for piece, count in pieces)
    body = b'{"event_id": "p1", "app_id": "a", "device_id": "d", "type": "nope", "name": "'
    body += text.replace("\xff", "").encode() + (b"\xff" if "\xff" in text else b"") + b'"}'
    data = b'{"app_id": "a", "device_id": "d", "events": [' + body + b"]}" if in_batch else body
    config = make_config(payload_cap=cap)
    result = run(data + b"\n", config)
    lines = [fz.Line(data, None, "payload")]
    accounting = account(lines, result, config)
    assert len(result.dead) == 1
    if len(data) > cap and not in_batch:
        assert accounting.truncated == 1, result.dead


# --- boundaries, one by one (quick to read when they fail) -----------------------------------


def _event(event_id: str, ts: int = T0, **fields: Any) -> Record:
    return {
        "event_id": event_id,
        "app_id": "app-a",
        "device_id": "dev-1",
        "type": "screen_view",
        "ts": ts,
        **fields,
    }


def _sized(target: int) -> bytes:
    event = _event("big", name="")
    event["name"] = "x" * (target - len(orjson.dumps(event)))
    data = orjson.dumps(event)
    assert len(data) == target
    return data


@pytest.mark.parametrize(
    ("size", "reason"),
    [(MAX_EVENT_BYTES - 1, None), (MAX_EVENT_BYTES, None), (MAX_EVENT_BYTES + 1, "too_large")],
    ids=["under", "at", "over"],
)
def test_message_size_around_max_event_bytes(size: int, reason: str | None) -> None:
    data = _sized(size)
    lines = [fz.Line(orjson.dumps(_event("e0", type="app_launch")), None, "valid")]
    lines.append(fz.Line(data, None, "size"))
    config = make_config(payload_cap=512)
    result = run(fz.as_jsonl(lines), config)
    account(lines, result, config)
    assert [d["reason"] for d in result.dead] == ([reason] if reason else [])
    if reason:
        [dead] = result.dead
        assert dead["payload_truncated"] is True
        assert (dead["payload_bytes"], len(dead["payload"])) == (size, 512)


DEPTHS = (31, 32, 33, 100, 127, 128, 129, 254, 255, 256, 1000)


@pytest.mark.parametrize("shape", ["arrays", "objects", "mixed"])
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("in_batch", [False, True], ids=["single", "batch"])
def test_nesting_deeper_than_max_depth_is_invalid_event_and_the_rest_goes_on(
    shape: str, depth: int, in_batch: bool
) -> None:
    """Event object = level 1, its `extra` container = level 2, and so on (SPEC section 1)."""
    deep = _event("deep", ts=T0 + 1, extra="@@deep@@")
    deep_bytes = orjson.dumps(deep).replace(b'"@@deep@@"', fz.nest(shape, depth - 1))
    assert fz.depth_of(orjson.loads(deep_bytes)) == depth
    first = orjson.dumps(_event("e0", type="app_launch"))
    after = orjson.dumps(_event("e2", ts=T0 + 2))
    if in_batch:
        middle = b'{"app_id": "app-a", "device_id": "dev-1", "events": ['
        middle += deep_bytes + b"," + after + b"]}"
        lines = [fz.Line(first, None, "valid"), fz.Line(middle, None, "batch")]
    else:
        lines = [fz.Line(x, None, "deep") for x in (first, deep_bytes, after)]
    config = make_config(max_depth=32)
    result = run(fz.as_jsonl(lines), config)
    account(lines, result, config)
    rejected = depth > 32
    assert [d["reason"] for d in result.dead] == (["invalid_event"] if rejected else [])
    expected_ids = ["e0", "e2"] if rejected else ["e0", "deep", "e2"]
    assert [r["event_id"] for r in result.enriched] == expected_ids
    if in_batch and rejected:
        assert result.dead[0]["index"] == 0


@pytest.mark.parametrize("field", ["event_id", "attributes"])
@pytest.mark.parametrize("depth", [33, 256, 257, 1000])
def test_a_deep_value_in_a_field_of_the_wrong_type_is_invalid_event(field: str, depth: int) -> None:
    """The schema's error then holds the deep value: explaining it must not stop the run."""
    deep = _event("deep", ts=T0 + 1)
    deep[field] = "@@deep@@"
    data = orjson.dumps(deep).replace(b'"@@deep@@"', fz.nest("arrays", depth - 1))
    lines = [fz.Line(orjson.dumps(_event("e0", type="app_launch")), None, "valid")]
    lines += [fz.Line(data, None, "deep"), fz.Line(orjson.dumps(_event("e2", ts=T0 + 2)), None, "")]
    config = make_config(max_depth=32)
    result = run(fz.as_jsonl(lines), config)
    account(lines, result, config)
    assert [d["reason"] for d in result.dead] == ["invalid_event"]
    assert [r["event_id"] for r in result.enriched] == ["e0", "e2"]


@pytest.mark.parametrize("max_depth", [8, 128])
def test_an_event_at_max_depth_is_written_whole_to_every_output(max_depth: int) -> None:
    deep = _event("deep", extra="@@deep@@", attributes={"a": "@@deep2@@"})
    data = orjson.dumps(deep).replace(b'"@@deep@@"', fz.nest("mixed", max_depth - 1))
    data = data.replace(b'"@@deep2@@"', fz.nest("arrays", max_depth - 2))
    assert fz.depth_of(orjson.loads(data)) == max_depth
    config = make_config(max_depth=max_depth)
    lines = [fz.Line(data, None, "deep")]
    result = run(fz.as_jsonl(lines), config)
    account(lines, result, config)
    assert result.dead == []
    for name, records in result.partners.items():
        assert records, f"partner {name} got nothing"


# --- the duplicate window (SPEC section 3, rule 1) -------------------------------------------


@dataclass
class WindowCase:
    window_s: int
    max_ids: int
    sessions: list[list[Record]]  # events of each session in order; all but the last terminate
    retry: Record
    is_duplicate: bool


@st.composite
def window_cases(draw: st.DrawFn) -> WindowCase:
    """A device's sessions, then an SDK retry of an event of its first session.

    Only the cases the SPEC decides: no session holds more than dedup_max_ids ids, and the
    retry's session either ended clearly inside or outside the window, and either all ids fit
    under dedup_max_ids or the newer closed sessions alone hold more.
    """
    window_s = draw(st.sampled_from((600, 3600)))
    max_ids = draw(st.sampled_from((10_000, 6, 3)))
    count = draw(st.integers(1, 4))
    sessions: list[list[Record]] = []
    ts = T0 - 6 * 3_600_000
    for number in range(count):
        if number:
            gap = draw(st.sampled_from((5_000, 299_000, 601_000, 1_800_000, 3_599_000, 3_601_000)))
            ts += gap + draw(st.integers(0, 2_000))
        events = [_event(f"s{number}-0", ts, type="app_launch")]
        for step in range(1, draw(st.integers(1, 4))):
            events.append(_event(f"s{number}-{step}", ts + step * 1_000))
        ts = events[-1]["ts"]
        if number < count - 1:
            ts += 1_000
            events.append(_event(f"s{number}-end", ts, type="app_terminate"))
        sessions.append(events)
    assume(all(len(events) <= max_ids for events in sessions))
    first = sessions[0]
    retry = draw(st.sampled_from(first))
    end_of_first = first[-1]["ts"]
    latest = sessions[-1][-1]["ts"]
    all_ids = sum(map(len, sessions))
    newer_closed_ids = sum(map(len, sessions[1:-1]))
    if count <= 2:
        is_duplicate = True  # the open session, or the most recently closed one
    else:
        margin = end_of_first - (latest - window_s * 1000)
        assume(abs(margin) > 1_000)
        assume(all_ids <= max_ids or newer_closed_ids > max_ids)
        is_duplicate = margin > 0 and all_ids <= max_ids
    return WindowCase(window_s, max_ids, sessions, dict(retry), is_duplicate)


def _run_retry(sessions: list[list[Record]], retry: Record, config: Config) -> Run:
    messages = [orjson.dumps(e) for session in sessions for e in session]
    messages.append(orjson.dumps(retry))
    lines = [fz.Line(m, None, "window") for m in messages]
    result = run(fz.as_jsonl(lines), config)
    if result.summary["duplicates"] == 0:
        return result  # accounted for by the caller's assertion, not the walk's
    account(lines, result, config)
    return result


@settings(FUZZ_SETTINGS, max_examples=120)
@given(window_cases())
def test_a_retry_is_a_duplicate_exactly_while_its_session_is_remembered(case: WindowCase) -> None:
    sessions = SessionConfig(dedup_window_s=case.window_s, dedup_max_ids=case.max_ids)
    result = _run_retry(case.sessions, case.retry, make_config(sessions=sessions))
    assert result.summary["duplicates"] == int(case.is_duplicate), case
    ends = [r for r in result.sessions if r["type"] == "session_end"]
    forced = not case.is_duplicate and case.retry["type"] == "app_launch"
    assert len(ends) == len(case.sessions) + forced
