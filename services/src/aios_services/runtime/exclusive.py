"""Replicas of a service whose state is one DuckDB file that cannot be split by agent (the
recorder's traces, the access service's identities and audit): one replica is active, the others
wait as standbys and take over when it dies.

The active replica holds the service's one partition lease (`partitions.py`, one partition); a
standby starts the service when it gets the lease, which happens when the active replica stops
(at once) or dies (the lease expires after the TTL). An active replica that finds its lease taken
(it was paused longer than the TTL) exits to be restarted as a standby; the file's own lock keeps
the new owner out until it has.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from pydantic import JsonValue

from .bus import Bus
from .partitioned import lease_bucket
from .partitions import Partitions
from .service import HealthDetails, Starter, cancel_and_wait, keep_running

log = logging.getLogger(__name__)


def exclusive(service: str, instance: str, ttl_s: float, start: Starter) -> Starter:
    """`start`, run by one replica at a time; the others are standbys."""

    async def starter(bus: Bus, stack: AsyncExitStack) -> HealthDetails:
        owners, ttl = await lease_bucket(bus, ttl_s)
        active: list[HealthDetails | None] = []

        async def take(_: int) -> None:
            # Its cleanups go on the service's own stack: they run at its stop, before the lease
            # is let go (pushed below, so it runs after them).
            active.append(await start(bus, stack))
            log.info("%s %s is the active replica", service, instance)

        async def give(_: int) -> None:
            if not lease.stopping:  # taken by another while this one was paused: stop serving now
                bus.give_up(f"{service} lease lost to another replica")

        lease = Partitions(owners, service, instance, 1, take, give, ttl_s=ttl, sticky=True)
        stack.push_async_callback(lease.release_all)
        await lease.tick()
        ticker = asyncio.create_task(keep_running(f"{service} lease", lease.run_forever))
        stack.push_async_callback(cancel_and_wait, ticker)
        bus.add_check("lease", lease.problem)

        def details() -> dict[str, JsonValue]:
            if not active:
                return {"role": "standby", "members": list[JsonValue](lease.members)}
            inner = active[0]() if active[0] is not None else {}
            return {**inner, "role": "active"}

        return details

    return starter
