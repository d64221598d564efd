"""What the demo's worker made: read back from every output topic, written down like offline
mode's outputs, and summarized for a person."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from pipeline.config import Config
from pipeline.kafka.reader import read_topics
from pipeline.kafka.sending import ProduceStats
from pipeline.sinks.files import OutputFiles, write_records
from pipeline.vocabulary import END_IDLE, SESSION_END, SESSION_START

_SAMPLE_CHARS: Final = 96


@dataclass(slots=True)
class DemoOutputs:
    """Every record the worker wrote, per output, in topic order per partition."""

    sessions: list[dict[str, Any]]
    enriched: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    partners: dict[str, list[dict[str, Any]]]


async def read_outputs(config: Config, timeout_s: float) -> DemoOutputs:
    """Every record of the output topics, up to their end offsets now."""
    topics = config.topics
    partner_of = {p.topic: p.name for p in config.partners}
    outputs = DemoOutputs([], [], [], {p.name: [] for p in config.partners})
    by_topic = {
        topics.sessions: outputs.sessions,
        topics.enriched: outputs.enriched,
        topics.deadletter: outputs.dead_letters,
    }
    by_topic.update({topic: outputs.partners[name] for topic, name in partner_of.items()})

    def on_record(record: Any) -> None:
        by_topic[record.topic].append(orjson.loads(record.value))

    await read_topics(config, list(by_topic), on_record, timeout_s=timeout_s)
    return outputs


def write_outputs(outputs: DemoOutputs, output_dir: Path) -> None:
    """The topics' records as offline mode's output directory (`pipeline.sinks.files`)."""
    files = OutputFiles(output_dir, outputs.partners)
    try:
        write_records(files.sessions, outputs.sessions)
        write_records(files.enriched, outputs.enriched)
        write_records(files.dead_letter, outputs.dead_letters)
        for name, records in outputs.partners.items():
            write_records(files.partners[name], records)
    finally:
        files.close()


def summarize(
    outputs: DemoOutputs,
    stats: ProduceStats,
    config: Config,
    *,
    asked_rate: float,
    devices: int,
    output_dir: Path,
) -> str:
    """The demo's summary: what went in, the sessions, dead letters, partners, files."""
    sessions = config.sessions
    starts = [r for r in outputs.sessions if r["type"] == SESSION_START]
    ends = [r for r in outputs.sessions if r["type"] == SESSION_END]
    still_open = len({r["session_id"] for r in starts} - {r["session_id"] for r in ends})
    reasons = Counter(r["end_reason"] for r in ends)
    rate = stats.events / stats.elapsed_s if stats.elapsed_s else 0.0
    dead = Counter(r["reason"] for r in outputs.dead_letters)
    lines = [
        f"sessionize demo: {stats.elapsed_s:.0f} s of live app traffic through Kafka at "
        f"{config.kafka.bootstrap} and one worker",
        f"(session timeout {sessions.session_timeout_s:g} s, idle timeout "
        f"{sessions.idle_timeout_s:g} s, grace {config.worker.grace_s:g} s)",
        "",
        _row(
            "input",
            f"{stats.events:,} events in {stats.delivered:,} messages from {devices:,} devices: "
            f"{rate:.0f} events/s (asked {asked_rate:g})"
            + (f", {stats.failed} failed" if stats.failed else ""),
        ),
        _row("sessions", f"{len(starts):,} started, {len(ends):,} ended"),
        _row("  ended by", _counts(reasons) or "-"),
    ]
    traffic_end_ms = stats.started_ms + round(stats.elapsed_s * 1000)
    cut_off = sum(
        r["end_reason"] == END_IDLE
        and r["end_ts"] + sessions.idle_timeout_s * 1000 > traffic_end_ms
        for r in ends
    )
    if cut_off:
        lines.append(_row("", f"({cut_off} idle: in the foreground when the traffic stopped)"))
    if still_open:
        lines.append(_row("  still open", f"{still_open} (their end came after the demo)"))
    durations = sorted(r["duration_ms"] / 1000 for r in ends)
    if durations:
        lines.append(
            _row(
                "durations",
                f"median {statistics.median(durations):.1f} s · "
                f"p90 {_percentile(durations, 0.9):.1f} s · max {durations[-1]:.1f} s",
            )
        )
    lines.append(_row("enriched", f"{len(outputs.enriched):,} events"))
    lines.append(
        _row("dead letters", f"{sum(dead.values())}" + (f": {_counts(dead)}" if dead else ""))
    )
    lines.append(_row("partners", "records  sample"))
    width = max((len(name) for name in outputs.partners), default=0)
    for name, records in outputs.partners.items():
        sample = _sample(records[0]) if records else "-"
        lines.append(f"  {name.ljust(width)}  {len(records):>8,}  {sample}")
    lines.append(_row("files", f"{output_dir}/"))
    lines.append(_row("", "summary.txt, timeline.html (the picture), demo.toml, worker.log,"))
    lines.append(
        _row("", "sessions.jsonl, enriched.jsonl, dead_letter.jsonl, partners/<name>.jsonl")
    )
    return "\n".join(lines)


def _row(label: str, text: str) -> str:
    return f"{label:<14}{text}"


def _counts(counter: Counter[str]) -> str:
    return " · ".join(f"{key} {count:,}" for key, count in counter.most_common())


def _percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(ordered) * share // 1))
    return ordered[int(rank) - 1]


def _sample(record: Mapping[str, Any]) -> str:
    text = orjson.dumps(record).decode()
    return text if len(text) <= _SAMPLE_CHARS else text[: _SAMPLE_CHARS - 1] + "…"
