"""Where a syscall's life is written down: its result (KV `AIOS_RESULTS`, then the caller, then the
ack, in that order, so a crash in between never loses it) and its state changes (events)."""

from __future__ import annotations

import contextlib
from typing import Protocol

import nats
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, JsonValue

from aios_schemas import Namespace, Syscall, SyscallEvent, SyscallResult, SyscallState, encode

from ..runtime import Bus
from ..runtime.consumer import Delivery
from .groups import Held


class StoredResult(BaseModel):
    """What the scheduler keeps in KV per syscall: the result, whose it is and what it asked."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agent: str
    digest: str | None = None  # Syscall.digest() of the call answered (None: stored before digests)
    result: SyscallResult


class ResultStore(Protocol):
    async def get(self, syscall_id: str) -> StoredResult | None: ...

    async def put(self, call: Syscall, res: SyscallResult) -> None:
        """Store `res` as the answer to `call` (its digest is `res.request` when set)."""
        ...


class KvResults:
    """Results in NATS KV (with the bucket's TTL)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def get(self, syscall_id: str) -> StoredResult | None:
        try:
            entry = await self.kv.get(syscall_id)
        except KeyNotFoundError:
            return None
        return StoredResult.model_validate_json(entry.value) if entry.value else None

    async def put(self, call: Syscall, res: SyscallResult) -> None:
        digest = res.request or call.digest()  # computed once per call, at completion
        await self.kv.put(call.id, encode(StoredResult(agent=call.agent, digest=digest, result=res)))


class Outbox:
    """Results to callers and events to whoever watches (the recorder, `aios top`, tests).

    Events are fire-and-forget: they ride along with the next message the scheduler sends anyway
    (the exec request, the result), in the same socket write (`Bus.publish_soon`).
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.ns: Namespace = bus.ns

    async def deliver(self, agent: str, res: SyscallResult, delivery: Delivery[Syscall] | None) -> None:
        """Send the caller its result, then ack the syscall (it leaves the work queue)."""
        await self.send(agent, res)
        await self.ack(delivery)

    async def send(self, agent: str, res: SyscallResult) -> None:
        await self.bus.send_riders()
        await self.bus.nc.publish(self.ns.result(agent, res.id), encode(res))

    async def ack(self, delivery: Delivery[Syscall] | None) -> None:
        await self.bus.send_riders()
        if delivery is not None:
            await delivery.ack()

    async def answer(self, agent: str, syscall_id: str, res: SyscallResult) -> None:
        """Tell the caller without touching the stream (a malformed or refused message)."""
        with contextlib.suppress(nats.errors.Error):
            await self.bus.nc.publish(self.ns.result(agent, syscall_id), encode(res))

    def event(
        self,
        held: Held,
        state: SyscallState,
        details: dict[str, JsonValue] | None = None,
        ts: float | None = None,
    ) -> None:
        c = held.call
        evt = SyscallEvent(
            id=c.id,
            state=state,
            agent=c.agent,
            session=c.session,
            kind=c.kind,
            resource=held.group,
            details=details or {},
        )
        self.publish(evt if ts is None else evt.model_copy(update={"ts": ts}))

    def publish(self, evt: SyscallEvent) -> None:
        self.bus.publish_soon(self.ns.event(evt.state), encode(evt))
