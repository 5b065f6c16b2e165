"""An agent's working set: the records it uses, in RAM, bounded by its quota (records and bytes),
evicted with LRU-K (O'Neil, O'Neil & Weikum, SIGMOD 1993), K = 2 by default.

The victim is the resident record whose K-th most recent access is the oldest (its "backward
K-distance" is the largest); a record accessed fewer than K times has an infinite distance and goes
first, the least recently used of those first. So a record touched once (a scan, a one-off add) does
not push out one the agent keeps coming back to, which plain LRU would. Access history outlives
residency for a bounded number of records (the retained information of the paper), so a record
evicted and read again remembers its earlier accesses. Time is a logical clock (one tick per
access), so the order is deterministic. Eviction only leaves RAM: every record is in the long-term
store (DuckDB, S3) before it enters the working set.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class Quota:
    records: int
    bytes: int


class LruK(Generic[K, V]):
    def __init__(self, quota: Quota, k: int = 2, retained: int | None = None) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.quota = quota
        self.k = k
        self.retained = retained if retained is not None else max(4 * quota.records, 64)
        self._clock = 0
        self._values: dict[K, tuple[V, int]] = {}  # resident: value, its size in bytes
        self._history: OrderedDict[K, deque[int]] = OrderedDict()  # last K access times, oldest first
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def _touch(self, key: K) -> None:
        self._clock += 1
        times = self._history.get(key)
        if times is None:
            times = self._history[key] = deque(maxlen=self.k)
        times.append(self._clock)
        self._history.move_to_end(key)
        # Forget the history of the least recently accessed non-resident records beyond the bound.
        while len(self._history) > self.retained + len(self._values):
            old = next(iter(self._history))
            if old in self._values:
                break
            del self._history[old]

    def get(self, key: K) -> V | None:
        """The resident value (an access), or None (no access is counted: the caller loads the
        record and `put`s it, which counts)."""
        hit = self._values.get(key)
        if hit is None:
            return None
        self._touch(key)
        return hit[0]

    def touch(self, key: K) -> None:
        """Count an access to a resident record (e.g. returned by a search)."""
        if key in self._values:
            self._touch(key)

    def put(self, key: K, value: V, size: int) -> list[K]:
        """Admit (or replace) `key` as just accessed; returns the keys evicted to stay within quota
        (never `key` itself, even if it alone is over the byte quota: it is in use)."""
        old = self._values.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._values[key] = (value, size)
        self.bytes += size
        self._touch(key)
        evicted = []
        while len(self._values) > 1 and (
            len(self._values) > self.quota.records or self.bytes > self.quota.bytes
        ):
            victim = self.victim(exclude=key)
            self.discard(victim)
            evicted.append(victim)
        return evicted

    def discard(self, key: K) -> None:
        """Leave RAM (evicted, or deleted); the access history stays (bounded)."""
        old = self._values.pop(key, None)
        if old is not None:
            self.bytes -= old[1]

    def forget(self, key: K) -> None:
        """A deleted record: no value, no history."""
        self.discard(key)
        self._history.pop(key, None)

    def _rank(self, key: K) -> tuple[int, int]:
        times = self._history[key]
        kth = times[0] if len(times) >= self.k else -1  # -1: fewer than K accesses, infinite distance
        return (kth, times[-1])

    def victim(self, exclude: K | None = None) -> K:
        """The resident key with the largest backward K-distance (see the module docstring)."""
        return min((key for key in self._values if key != exclude), key=self._rank)

    def order(self) -> list[K]:
        """Resident keys, next victim first (for tests and inspection)."""
        return sorted(self._values, key=self._rank)
