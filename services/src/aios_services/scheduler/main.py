"""`python -m aios_services.scheduler`: wire the scheduler to the bus and run it."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from aios_schemas import CancelRequest, HoldQuery, QuotaQuery, ResultQuery, StatsQuery, Syscall

from ..runtime import Bus, HealthDetails, cancel_and_wait, keep_running, main_for
from ..runtime.agent_requests import serve_agent_requests
from ..runtime.consumer import JsConsumer
from ..runtime.service import load_settings
from . import streams
from .control import Control
from .core import Scheduler
from .outcomes import KvResults
from .replicas import Replicas
from .settings import SchedulerSettings

log = logging.getLogger(__name__)


async def start(bus: Bus, stack: AsyncExitStack, settings: SchedulerSettings) -> HealthDetails:
    ns = bus.ns
    await bus.ensure_stream(streams.syscalls_stream(ns))
    await bus.ensure_stream(streams.events_stream(ns))
    results = await bus.ensure_kv(ns.results_bucket, ttl_s=settings.results_ttl_s)
    limits = await bus.ensure_kv(ns.limits_bucket)
    sched = Scheduler(bus, KvResults(results), limits, settings)
    control = Control(sched)
    replicas_kv = await bus.ensure_kv(ns.replicas_bucket, ttl_s=settings.replica_ttl_s * 4)
    replicas = Replicas(replicas_kv, settings.instance, settings.replica_ttl_s, sched.resize)
    sched.replicas = replicas
    await replicas.beat()  # know the other replicas before taking any syscall

    # The access rules before the first syscall: a restarted scheduler must not admit what they deny.
    access_kv = await bus.ensure_kv(ns.access_bucket)
    sched.approvals.kv = access_kv
    access_watch = asyncio.create_task(
        keep_running("access watch", lambda: sched.access.watch(access_kv)), name="access watch"
    )
    stack.push_async_callback(cancel_and_wait, access_watch)
    await asyncio.wait_for(sched.access.loaded.wait(), timeout=30)
    # And the catalogue: which resources need an approval (a call to one admitted before would run
    # without asking), and the backends there are.
    catalogue_watch = asyncio.create_task(
        keep_running("catalogue watch", sched.watch_catalog), name="catalogue watch"
    )
    stack.push_async_callback(cancel_and_wait, catalogue_watch)
    await asyncio.wait_for(sched.catalog_loaded.wait(), timeout=30)

    consumer = JsConsumer(
        bus,
        stream=ns.syscalls_stream,
        filter_subject=ns.sys_all,
        config=streams.consumer(settings),
        model=Syscall,
        what="syscall",
    )
    await consumer.open()
    sched.holds = consumer

    async def consume() -> None:
        await consumer.run(
            sched.admit,
            on_invalid=sched.reject_malformed,
            batch=sched.fetch_room,
            wait_for_room=sched.wait_progress,
        )

    async def heartbeat() -> None:
        await consumer.heartbeat_forever(max(0.2, settings.ack_wait_s / 3))

    await serve_agent_requests(bus, "scheduler", "result", ResultQuery, control.query, queue="scheduler")
    await bus.serve(ns.ctl("scheduler", "stats"), StatsQuery, control.stats, queue="scheduler")
    # Every replica answers this one: a merged view asks them all.
    await bus.serve(ns.ctl("scheduler", "stats_local"), StatsQuery, control.stats)
    await bus.serve(ns.ctl("scheduler", "holds"), HoldQuery, control.holds)
    await bus.serve(ns.ctl("scheduler", "quotas"), QuotaQuery, control.quotas, queue="scheduler")
    # Cancel is broadcast: only the replica holding the syscall can stop it.
    await serve_agent_requests(bus, "scheduler", "cancel", CancelRequest, control.cancel)
    loops = {
        "replica heartbeat": replicas.run_forever,
        "replica watch": replicas.watch_forever,
        "catalogue expiry": sched.expire_catalog_forever,
        "syscall fetch": consume,
        "ack heartbeat": heartbeat,
        "deadline expiry": sched.expire_forever,
    }
    tasks = [asyncio.create_task(keep_running(name, loop), name=name) for name, loop in loops.items()]
    stack.push_async_callback(replicas.leave)
    stack.push_async_callback(sched.release_queued)  # runs last: after the loops stop
    for task in tasks:
        stack.push_async_callback(cancel_and_wait, task)
    return sched.snapshot


def main() -> None:
    settings = load_settings("scheduler", SchedulerSettings)
    main_for("scheduler", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
