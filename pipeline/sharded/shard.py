"""One shard of an offline `--jobs N` run: the devices whose id hashes to this shard.

Every shard reads the whole input and finds each line's device; it runs the one-message step
only for its own lines, and writes what it emits as keyed streams (`pipeline.sharded.keyed`)
for the merge. Whose line is it (every shard decides the same way, from the bytes alone):

- a line of 256 bytes or more with no backslash and a single `"device_id":"` in it: the shard of
  the string that follows (no backslash, so no escaped key can name another device; a valid
  event of that line can only have that device, from its own field or its batch's);
- otherwise the line is decoded by orjson (cheaper than the scan for a short line), and
  - a single event with a string `device_id` goes to that device's shard;
  - a batch with a string `device_id` that names no other device (the only `"device_id"` in
    the bytes, and no backslash) goes to that device's shard;
  - any other batch is "mixed": every shard runs it and applies only its own devices' events;
    parse rejections go to shard 0, refused events to their device's shard;
  - anything else (too large, not JSON, not an object, no usable `device_id`) goes to shard 0,
    which writes its dead letters (such a line has no valid event).

Sessions are independent per device, so each shard applies exactly the events a single run
would apply to its devices, in the same order: the merged outputs are the same bytes.
"""

from __future__ import annotations

import gc
import zlib
from array import array
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import Config
from pipeline.engine import Applied, DeviceState, Record
from pipeline.input import NOT_DECODED
from pipeline.memory import keep_freed_memory
from pipeline.offline import Summary, count_outputs, line_blocks
from pipeline.processing.processor import Outputs, Processor
from pipeline.processing.routing import json_lines, route
from pipeline.processing.step import MessageStep
from pipeline.sharded.keyed import END, KEY_TYPE, SequenceKeys, StreamWriter, expand
from pipeline.sharded.merge import DEAD_LETTER_STREAM, PIPELINE_STREAM, partner_stream
from pipeline.sinks.files import json_line

_FLUSH_RECORDS = 2048
_MIXED = -1  # a batch whose events may belong to several shards
_CACHE_LIMIT = 1 << 20  # device ids whose shard is remembered
_SCAN_BYTES = 256  # from this long, a line's device is looked for in its bytes first


@dataclass(frozen=True, slots=True)
class ShardTask:
    """What one shard process needs (picklable: the processes may be spawned)."""

    input_path: Path
    work_dir: Path
    config: Config
    now_ms: int
    jobs: int
    index: int


def shard_of(device_id: str, jobs: int) -> int:
    """The shard of a device: stable across processes (unlike `hash`, which is salted)."""
    return zlib.crc32(device_id.encode("utf-8", "surrogatepass")) % jobs


class _Marks:
    """Which key each new record of each output list gets, recorded a line (or event) at a
    time as end positions and expanded to one key per record when written."""

    def __init__(self, lists: list[list[Record]]) -> None:
        self.keys: list[int] = []
        self.lists = lists
        self.ends: list[list[int]] = [[] for _ in lists]
        self._tracked = list(zip(lists, self.ends, strict=True))

    def mark(self, key: int) -> None:
        """The records added since the last mark get `key`."""
        self.keys.append(key)
        for records, ends in self._tracked:
            ends.append(len(records))

    def clear(self) -> None:
        """Forget the marks (after the lists were written and cleared)."""
        self.keys.clear()
        for ends in self.ends:
            ends.clear()


class _ShardWriter:
    """Writes a batch of outputs as keyed streams, counting them in the summary."""

    def __init__(self, task: ShardTask, out: Outputs, summary: Summary) -> None:
        directory = task.work_dir / f"shard-{task.index}"
        directory.mkdir()
        self.directory = directory
        self.out = out
        self.summary = summary
        self.formatted = list(out.partners)
        self.marks = _Marks([out.pipeline_records, *(out.partners[n] for n in self.formatted)])
        self.pipeline = StreamWriter(directory, PIPELINE_STREAM, flagged=True)
        self.partners = [StreamWriter(directory, partner_stream(n)) for n in self.formatted]
        self.dead = StreamWriter(directory, DEAD_LETTER_STREAM)
        self.dead_letters: list[Record] = []
        self.dead_keys: list[int] = []

    def write(self) -> None:
        out, marks = self.out, self.marks
        routed = route(out, json_line)
        count_outputs(self.summary, routed, out, self.dead_letters)
        pipeline_ends, *partner_ends = marks.ends
        pipeline_keys = expand(marks.keys, pipeline_ends)
        self.pipeline.write(b"".join(routed.lines), pipeline_keys, routed.is_session)
        for name, stream, ends in zip(self.formatted, self.partners, partner_ends, strict=True):
            stream.write(json_lines(out.partners[name]), expand(marks.keys, ends))
        dead_lines = b"".join(map(json_line, self.dead_letters))
        self.dead.write(dead_lines, array(KEY_TYPE, self.dead_keys))
        out.clear()
        marks.clear()
        self.dead_letters.clear()
        self.dead_keys.clear()

    def close(self) -> None:
        for stream in (self.pipeline, *self.partners, self.dead):
            stream.close()


class _Shard:
    """The state of one shard's run: its devices, and the key of what is being applied."""

    def __init__(self, task: ShardTask) -> None:
        self.task = task
        self.jobs = task.jobs
        self.index = task.index
        processor = Processor(task.config.sessions, task.config.partners)
        self.processor = processor
        self.out = processor.new_outputs()
        rules = processor.only_rules
        self.rules_apply = rules.apply if rules is not None else None
        self.summary = Summary()
        self.writer = _ShardWriter(task, self.out, self.summary)
        self.states: dict[tuple[str, str], list[DeviceState]] = {}
        self.first_keys: list[int] = []  # each device's first key, in self.states' order
        self.key = 0  # the key of the line (or mixed batch event) being applied
        self.position = 0  # the next event's position in a mixed batch
        self.line_key = 0
        self.shards: dict[str, int] = {}
        self.scanned: dict[bytes, int] = {}
        max_payload = task.config.limits.max_dead_letter_payload_bytes
        self.step = MessageStep(self.apply, max_payload)
        self.mixed_step = MessageStep(self.apply_mixed, max_payload)

    def shard(self, device_id: str) -> int:
        """The shard of `device_id`, remembered."""
        shard = self.shards.get(device_id)
        if shard is None:
            if len(self.shards) >= _CACHE_LIMIT:
                self.shards.clear()
            shard = self.shards[device_id] = shard_of(device_id, self.jobs)
        return shard

    def shard_of_bytes(self, device_id: bytes) -> int:
        """The shard of the device named by `device_id` (its UTF-8), remembered."""
        if len(self.scanned) >= _CACHE_LIMIT:
            self.scanned.clear()
        shard = self.scanned[device_id] = zlib.crc32(device_id) % self.jobs
        return shard

    def apply(self, event: Record) -> Applied:
        """Apply an event of this shard's device (the step's `apply_event`)."""
        key = (event["app_id"], event["device_id"])
        states = self.states.get(key)
        if states is None:
            states = self.states[key] = self.processor.new_states(*key)
            self.first_keys.append(self.key)
        if self.rules_apply is not None:  # as offline's _Devices: the rules alone, directly
            return self.rules_apply(states[0], event, self.out.pipeline_records, in_place=True)
        return self.processor.apply(states, event, self.out)

    def apply_mixed(self, event: Record) -> Applied | None:
        """Apply an event of a mixed batch if its device is this shard's (else None)."""
        self.key = self.line_key + 1 + self.position
        self.position += 1
        if self.shard(event["device_id"]) != self.index:
            return None
        verdict = self.apply(event)
        self.writer.marks.mark(self.key)
        return verdict


def run_shard(task: ShardTask) -> Summary:
    """Run one shard over the whole input; its streams go to `work_dir/shard-<index>`."""
    keep_freed_memory()
    gc.freeze()
    gc.disable()  # as run_offline: device states are long-lived and acyclic
    shard = _Shard(task)
    try:
        _run(shard)
    finally:
        shard.writer.close()
    return shard.summary


def _run(shard: _Shard) -> None:
    task, writer, index = shard.task, shard.writer, shard.index
    limits = task.config.limits
    max_bytes = limits.max_event_bytes
    keys = SequenceKeys.for_message_bytes(max_bytes)
    stride = keys.stride
    emitted = shard.out.pipeline_records
    marks = writer.marks
    mark, mark_keys, pipeline_ends = marks.mark, marks.keys, marks.ends[0]
    simple = len(marks.ends) == 1  # only the pipeline's records: mark them inline
    dead, dead_keys = writer.dead_letters, writer.dead_keys
    run_step, dead_letter = shard.step.run, shard.step.dead_letter
    now_ms, loads, decode_error = task.now_ms, orjson.loads, orjson.JSONDecodeError
    shards, shard_of_new = shard.shards, shard.shard
    scanned, shard_of_bytes = shard.scanned, shard.shard_of_bytes
    number = 0
    with task.input_path.open("rb") as source:
        for block in line_blocks(source):
            first = number + 1
            for number, message in enumerate(block, start=first):
                # Whose line is it (see the module's docstring)? Inline: every shard does
                # this for every line.
                owner = 0
                document = NOT_DECODED
                size = len(message)
                if size >= _SCAN_BYTES and b"\\" not in message:
                    # a long line (a batch): finding its one device in the bytes is cheaper
                    # than decoding it, for the shards that do not keep it
                    at = message.find(b'"device_id":"')
                    if at >= 0 and message.count(b'"device_id"') == 1:
                        at += 13
                        named = message[at : message.find(b'"', at)]
                        known = scanned.get(named)
                        owner = shard_of_bytes(named) if known is None else known
                        size = -1  # owned
                if 0 <= size <= max_bytes:
                    try:
                        document = loads(message)
                    except decode_error:
                        pass
                    else:
                        if type(document) is dict:
                            device_id = document.get("device_id")
                            batch = "events" in document and "type" not in document
                            if type(device_id) is str:
                                known = shards.get(device_id)
                                owner = shard_of_new(device_id) if known is None else known
                                if batch and (
                                    b"\\" in message or message.count(b'"device_id"') != 1
                                ):
                                    owner = _MIXED
                            elif batch:
                                owner = _MIXED
                if owner == index:
                    shard.key = key = number * stride
                    rejections = run_step(message, now_ms, limits, None, document)
                    if simple:
                        mark_keys.append(key)
                        pipeline_ends.append(len(emitted))
                    else:
                        mark(key)
                    if rejections:
                        origin = {"line": number}
                        dead.extend(dead_letter(r, message, origin) for r in rejections)
                        dead_keys.extend(repeat(key, len(rejections)))
                elif owner == _MIXED:
                    _run_mixed(shard, number * stride, number, message, document)
                if len(emitted) >= _FLUSH_RECORDS or len(dead) >= _FLUSH_RECORDS:
                    writer.write()
            keys.check(number)
    for states, first_key in zip(shard.states.values(), shard.first_keys, strict=True):
        shard.processor.close_at_end(states, shard.out)
        mark(END + first_key)
        if len(emitted) >= _FLUSH_RECORDS:
            writer.write()
    writer.write()
    shard.summary.lines = number
    steps = (shard.step, shard.mixed_step)
    shard.summary.duplicates = sum(step.verdicts[Applied.DUPLICATE] for step in steps)


def _run_mixed(shard: _Shard, line_key: int, number: int, message: bytes, document: Any) -> None:
    """A batch every shard runs: each applies its own devices' events."""
    task = shard.task
    shard.line_key = line_key
    shard.position = 0
    step = shard.mixed_step
    rejections = step.run(message, task.now_ms, task.config.limits, None, document)
    if not rejections:
        return
    parse_rejections = len(step.parse_rejections)  # the first ones: shard 0 writes them
    origin = {"line": number}
    writer = shard.writer
    for position, rejection in enumerate(rejections):
        if position < parse_rejections:
            if shard.index != 0:
                continue
            key = line_key
        else:  # a refused event: only its own shard applied it
            key = line_key + 1 + (rejection.index or 0)
        writer.dead_letters.append(step.dead_letter(rejection, message, origin))
        writer.dead_keys.append(key)
