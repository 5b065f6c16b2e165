"""Replies of finished runs (KV `AIOS_FINISHED`, keyed by agent and syscall id), shared by every
worker service: a scheduler that crashed holding a syscall re-sends it with `again`, and the worker
that already ran it answers with what it kept instead of running it twice."""

from __future__ import annotations

import asyncio
import time
import uuid

import nats
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from aios_schemas import AiosError, ExecReply, decode, encode

# How long a finished run's reply is kept for a scheduler that may ask again: longer than the
# scheduler's ack wait plus its restart, so a syscall redelivered after a scheduler crash is answered
# with what the backend already generated instead of being generated twice.
FINISHED_TTL_S = 600.0


class FinishedRuns:
    """Replies of finished runs, in KV `AIOS_FINISHED` keyed by agent and syscall id (with a TTL)."""

    def __init__(self, kv: KeyValue, bucket: str) -> None:
        self.kv = kv
        self.bucket = bucket

    # Keyed by agent and id: a syscall id reused by another agent never reaches this agent's reply
    # (agent names are one subject token, ids have no dots).
    @staticmethod
    def key(agent: str, syscall_id: str) -> str:
        return f"{agent}.{syscall_id}"

    def subject(self, agent: str, syscall_id: str) -> str:
        """Where a plain publish stores a reply (without waiting for JetStream's ack)."""
        return f"$KV.{self.bucket}.{self.key(agent, syscall_id)}"

    async def get(self, agent: str, syscall_id: str) -> ExecReply | None:
        try:
            entry = await self.kv.get(self.key(agent, syscall_id))
        except KeyNotFoundError:
            return None
        return decode(entry.value, ExecReply) if entry.value else None

    async def put(self, agent: str, syscall_id: str, reply: ExecReply) -> None:
        await self.kv.put(self.key(agent, syscall_id), encode(reply))

    # A run of an at-most-once resource marks its start here before it runs (ids have no dots, so
    # `<agent>.<id>.started` never collides with a reply's key).
    async def claim_start(self, agent: str, syscall_id: str, *, until: float) -> bool:
        """Mark the run's start; False if a run of it started before (anywhere): created only if
        absent, so two workers handed the same syscall (a scheduler paused past its ack wait
        dispatches what another has since dispatched) cannot both run it. The bus failing meanwhile
        (a node died, its stream electing a leader) is retried until `until` (monotonic), then
        `backend_unavailable`: nothing ran. A create whose answer was lost is recognised by the
        claim's own token, not taken for another run's."""
        key = self.key(agent, syscall_id) + ".started"
        token = uuid.uuid4().hex.encode()
        pause = 0.1
        while True:
            try:
                await self.kv.create(key, token)
                return True
            except KeyWrongLastSequenceError:
                try:
                    entry = await self.kv.get(key)
                except KeyNotFoundError:
                    continue
                return entry.value == token
            except nats.errors.Error as exc:
                if time.monotonic() + pause >= until:
                    raise AiosError(
                        "backend_unavailable",
                        f"could not record the start of {syscall_id} (the bus: {type(exc).__name__}); it did"
                        " not run",
                        retryable=True,
                    ) from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def started(self, agent: str, syscall_id: str) -> bool:
        try:
            await self.kv.get(self.key(agent, syscall_id) + ".started")
        except KeyNotFoundError:
            return False
        return True
