"""Kafka's default key partitioner (murmur2, as in the Java client), so JVM consumers and Kafka
Connect place a run id on the same partition as we do."""

from __future__ import annotations

import functools


def murmur2(data: bytes) -> int:
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    index = length & ~3
    if extra == 3:
        h ^= data[index + 2] << 16
    if extra >= 2:
        h ^= data[index + 1] << 8
    if extra >= 1:
        h ^= data[index]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


@functools.lru_cache(maxsize=65536)  # a run's id is hashed for each of its events; live runs repeat
def partition_for(key: str, partitions: int) -> int:
    # Java: Utils.toPositive(murmur2(key)) % numPartitions, toPositive = value & 0x7fffffff.
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
