"""Context snapshots of suspended generations (KV `AIOS_CONTEXTS`), keyed by syscall id; replies of
finished runs are the runtime's (`runtime.finished`)."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from aios_schemas import ContextSnapshot, decode, encode

from ..runtime.finished import FINISHED_TTL_S, FinishedRuns

__all__ = ["CONTEXT_TTL_S", "FINISHED_TTL_S", "ContextStore", "FinishedRuns"]

# A suspended syscall is resumed within seconds to minutes; a day covers a scheduler outage, and
# the TTL clears snapshots of syscalls that were abandoned and never resumed or cancelled.
CONTEXT_TTL_S = 24 * 3600.0


class ContextStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def get(self, syscall_id: str) -> ContextSnapshot | None:
        try:
            entry = await self.kv.get(syscall_id)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return decode(entry.value, ContextSnapshot)

    async def put(self, snapshot: ContextSnapshot) -> None:
        await self.kv.put(snapshot.id, encode(snapshot))

    async def delete(self, syscall_id: str) -> None:
        # purge, not delete: no history is kept for a finished syscall.
        await self.kv.purge(syscall_id)
