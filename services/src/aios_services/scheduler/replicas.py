"""Scheduler replicas split each backend's slots between them, so that together they never exceed it.

Every replica heartbeats a key in KV bucket `AIOS_REPLICAS` (with a TTL); the live set is the keys
refreshed within the TTL. A backend's slots are divided by rank: with S slots and N replicas,
replica r (by sorted instance name) may run S // N + (1 if r < S % N else 0) calls on it. JetStream
spreads syscalls over the replicas' pull consumers, so an even split wastes little; a static split
needs no coordination on the syscall path (shared counters would cost two KV round trips a call).

Membership changes are seen at once (a KV watch), and a newly started replica takes no slots for
a grace period, so the others shrink to their new shares first. Calls already running when a
share shrinks finish; new ones wait until the replica is within its share again. So a backend can
be over its slots only for the duration of calls that were running when a replica joined while
they were all busy (documented limit; the scale-out issue may replace this with leases).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import nats
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from aios_schemas.catalog import model_key


class Beat(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    instance: str
    ts: float


class Replicas:
    def __init__(self, kv: KeyValue, instance: str, ttl_s: float, on_change: Callable[[], None]) -> None:
        self.kv = kv
        self.instance = instance
        self.key = "replica." + model_key(instance).removeprefix("model.")
        self.ttl_s = ttl_s
        self.on_change = on_change
        self.live: list[str] = [instance]
        self.joined = time.monotonic()
        self.grace_s = min(1.0, ttl_s / 3)

    @property
    def in_grace(self) -> bool:
        return len(self.live) > 1 and time.monotonic() - self.joined < self.grace_s

    def share(self, slots: int) -> int:
        n = len(self.live)
        if self.in_grace:
            return 0  # let the replicas already running shrink to their new shares first
        rank = self.live.index(self.instance) if self.instance in self.live else 0
        return slots // n + (1 if rank < slots % n else 0)

    async def beat(self) -> None:
        await self.kv.put(self.key, Beat(instance=self.instance, ts=time.time()).model_dump_json().encode())
        await self.refresh()

    async def refresh(self) -> None:
        now = time.time()
        live = {self.instance}
        with contextlib.suppress(nats.js.errors.NoKeysError):
            for key in await self.kv.keys():
                with contextlib.suppress(nats.js.errors.KeyNotFoundError, ValueError):
                    entry = await self.kv.get(key)
                    beat = Beat.model_validate_json(entry.value or b"")
                    if now - beat.ts <= self.ttl_s:
                        live.add(beat.instance)
        ordered = sorted(live)
        if ordered != self.live:
            self.live = ordered
            self.on_change()

    async def run_forever(self) -> None:
        """Heartbeat, and expire replicas that stopped beating."""
        while True:
            await asyncio.sleep(min(self.ttl_s / 3, max(0.05, self.grace_s)))
            with contextlib.suppress(nats.errors.Error):
                await self.beat()
            self.on_change()  # the grace period may have ended: shares change

    async def watch_forever(self) -> None:
        """Learn of a new replica as soon as it beats."""
        watcher = await self.kv.watch("replica.>")
        async for entry in watcher:
            if entry is not None and entry.key != self.key:
                await self.refresh()

    async def leave(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.kv.delete(self.key)
