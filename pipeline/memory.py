"""Process memory settings for long runs that allocate and free records at a high rate.

glibc's malloc gives freed memory back to the kernel as soon as the top of its heap holds more
than 128 KiB free (`M_TRIM_THRESHOLD`), and serves blocks over a moving threshold with their own
`mmap` (`M_MMAP_THRESHOLD`). The pipeline frees a batch of records and their serialized lines
after every write, then allocates the next batch: with the defaults, each batch faulted its pages
in anew from the kernel (about a million minor page faults and 1-2 s of system time for a
million events offline; see BENCHMARKS.md). Keeping freed memory in the process costs nothing
in peak memory (the next batch reuses it) and removes most of those faults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_TRIM_BYTES = 256 * 1024 * 1024  # free memory kept at the top of the heap
_MMAP_BYTES = 32 * 1024 * 1024  # blocks below this come from the heap (glibc's maximum)


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    trimmed = mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES)
    mapped = mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)
    return bool(trimmed and mapped)


# Young garbage is still collected; full collections (a scan of every live object: over a
# second once a worker holds a million device objects) become rare.
_GC_THRESHOLDS = (100_000, 50, 100)


def collect_rarely() -> None:
    """Make the cyclic garbage collector rare, for a process holding many long-lived objects.

    With the defaults a worker kept re-scanning its device states: each time their number grew
    by a quarter, a full collection walked all of them (about a tenth of the worker's time, see
    BENCHMARKS.md). Device states and records have no reference cycles; what does (asyncio
    futures, exceptions) dies young and is still collected.
    """
    gc.collect()
    gc.freeze()  # what exists now (modules, classes, the app) is never scanned again
    gc.set_threshold(*_GC_THRESHOLDS)
