"""Syscall ids: UUIDv7 strings, time-sortable, made by the client (DESIGN §4)."""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit unix ms timestamp, version 7, 74 random bits.

    Python's uuid module gains uuid7 only in 3.14; the layout is twelve lines, not worth a dependency.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a (12 bits)
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b (62 bits)
    return str(uuid.UUID(int=value))


def id_time(syscall_id: str) -> float | None:
    """The unix time (seconds) a UUIDv7 id carries, or None for any other id."""
    try:
        u = uuid.UUID(syscall_id)
    except ValueError:
        return None
    if u.version != 7 or u.variant != uuid.RFC_4122:
        return None
    return (u.int >> 80) / 1000.0
