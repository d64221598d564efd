"""Which partition a device belongs to: Kafka's default partitioner, as the producers use it.

Devices are processed on the partition their device id hashes to; the worker forwards events
found elsewhere (keyed otherwise, or not keyed) to that partition of its repartition topic.
"""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2


@functools.lru_cache(maxsize=1 << 18)
def key_hash(key: bytes) -> int:
    """Kafka's default partitioner hash of a key (murmur2 is slow in Python: cached)."""
    return int(murmur2(key) & 0x7FFFFFFF)


def partition_for(device_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for key `device_id`."""
    return key_hash(device_id.encode()) % partitions
