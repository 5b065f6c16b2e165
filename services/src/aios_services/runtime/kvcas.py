"""Read-modify-write of one NATS KV entry with compare-and-set, so concurrent writers (scheduler
replicas) never lose each other's updates."""

from __future__ import annotations

from collections.abc import Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue


class CasContention(Exception):
    """Every attempt lost the race to another writer."""


async def cas_update(
    kv: KeyValue, key: str, change: Callable[[bytes | None], bytes | None], *, attempts: int = 20
) -> bool:
    """Apply `change(current value or None)` to `key`. `change` returns the new value, or None to
    leave the entry alone. Retries when another writer got in between; returns True if written."""
    for _ in range(attempts):
        try:
            entry = await kv.get(key)
            current, revision = entry.value, entry.revision
        except KeyNotFoundError:
            current, revision = None, None
        new = change(current)
        if new is None:
            return False
        try:
            if revision is None:
                await kv.create(key, new)
            else:
                await kv.update(key, new, last=revision)
            return True
        except KeyWrongLastSequenceError:
            continue
    raise CasContention(f"{key}: {attempts} concurrent updates in a row")
