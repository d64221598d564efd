"""pipeline.memory: the allocator and collector settings of long runs."""

from __future__ import annotations

import gc
import platform

import pytest

from pipeline.memory import collect_rarely, keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_accepted_by_glibc() -> None:
    assert keep_freed_memory() is True


def test_collect_rarely_raises_the_thresholds_and_still_collects_young_cycles() -> None:
    before = gc.get_threshold()
    try:
        collect_rarely()
        young, _, old = gc.get_threshold()
        assert young > before[0] and old > before[2]
        assert gc.get_freeze_count() > 0

        class Node:
            other: object = None

        node = Node()
        node.other = node  # a cycle, as asyncio futures and exceptions make
        del node
        assert gc.collect(0) >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
