"""Context snapshots of suspended generations (KV `AIOS_CONTEXTS`) and replies of finished runs
(KV `AIOS_FINISHED`), keyed by syscall id."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from aios_schemas import ContextSnapshot, ExecReply, decode, encode

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


# How long a finished run's reply is kept for a scheduler that may ask again: longer than the
# scheduler's ack wait plus its restart, so a syscall redelivered after a scheduler crash is answered
# with what the backend already generated instead of being generated twice.
FINISHED_TTL_S = 600.0


class FinishedRuns:
    """Replies of finished runs, in KV `AIOS_FINISHED` keyed by syscall id (with a TTL)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def get(self, syscall_id: str) -> ExecReply | None:
        try:
            entry = await self.kv.get(syscall_id)
        except KeyNotFoundError:
            return None
        return decode(entry.value, ExecReply) if entry.value else None

    async def put(self, syscall_id: str, reply: ExecReply) -> None:
        await self.kv.put(syscall_id, encode(reply))
