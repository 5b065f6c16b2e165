"""`python -m aios_services.scheduler`: wire the scheduler to the bus and run it."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

import nats
from nats.js.errors import BadRequestError

from aios_schemas import CancelRequest, ResultQuery, StatsQuery

from ..runtime import Bus, HealthDetails, keep_running, main_for
from ..runtime.tokens import TokenStore
from . import streams
from .core import Scheduler
from .replicas import Replicas
from .settings import SchedulerSettings

log = logging.getLogger(__name__)


async def _cancel(task: asyncio.Task[None]) -> None:
    # On Python 3.11 a cancel that lands inside nats-py's own `asyncio.wait_for` can be swallowed
    # (the loop goes on) or surface as its TimeoutError: cancel until the task is really done.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with %r on shutdown", task.get_name(), task.exception())


async def start(bus: Bus, stack: AsyncExitStack, settings: SchedulerSettings) -> HealthDetails:
    ns = bus.ns
    await bus.ensure_stream(streams.syscalls_stream(ns))
    await bus.ensure_stream(streams.events_stream(ns))
    results = await bus.ensure_kv(ns.results_bucket, ttl_s=settings.results_ttl_s)
    limits = await bus.ensure_kv(ns.limits_bucket)
    tokens = TokenStore.load(settings.tokens_file) if settings.tokens_file else TokenStore([])
    sched = Scheduler(bus, results, limits, tokens, settings)
    replicas_kv = await bus.ensure_kv(ns.replicas_bucket, ttl_s=settings.replica_ttl_s * 4)
    replicas = Replicas(replicas_kv, settings.instance, settings.replica_ttl_s, sched.resize)
    sched.replicas = replicas
    await replicas.beat()  # know the other replicas before taking any syscall

    try:
        psub = await bus.js.pull_subscribe(
            ns.sys_all, durable=streams.DURABLE, stream=ns.syscalls_stream, config=streams.consumer(settings)
        )
    except BadRequestError:  # consumer exists with other settings: update it (idempotent start)
        await bus.js.add_consumer(ns.syscalls_stream, streams.consumer(settings))
        psub = await bus.js.pull_subscribe(ns.sys_all, durable=streams.DURABLE, stream=ns.syscalls_stream)

    async def pull_forever() -> None:
        while True:
            batch = sched.fetch_room(settings.fetch_batch)
            if batch == 0:  # enough queued here; let other replicas take the rest
                await sched.wait_progress(0.5)
                continue
            try:
                msgs = await psub.fetch(batch=batch, timeout=1.0)
            except TimeoutError:  # nothing to fetch (nats-py raises its own or asyncio's)
                continue
            except nats.errors.Error as exc:  # e.g. reconnecting: try again shortly
                log.warning("fetch failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for msg in msgs:
                try:
                    await sched.admit(msg)
                except Exception:
                    log.exception("admission of %s failed", msg.subject)

    await bus.serve(ns.ctl("scheduler", "result"), ResultQuery, sched.query, queue="scheduler")
    await bus.serve(ns.ctl("scheduler", "stats"), StatsQuery, sched.stats, queue="scheduler")
    # Cancel is broadcast: only the replica holding the syscall can stop it.
    await bus.serve(ns.ctl("scheduler", "cancel"), CancelRequest, sched.cancel)
    loops = {
        "replica heartbeat": replicas.run_forever,
        "replica watch": replicas.watch_forever,
        "catalogue watch": sched.watch_catalog,
        "syscall fetch": pull_forever,
        "ack heartbeat": sched.heartbeat_forever,
    }
    tasks = [asyncio.create_task(keep_running(name, loop), name=name) for name, loop in loops.items()]
    stack.push_async_callback(replicas.leave)
    stack.push_async_callback(sched.release_queued)  # runs last: after the loops stop
    for task in tasks:
        stack.push_async_callback(_cancel, task)
    return sched.snapshot


def main() -> None:
    settings = SchedulerSettings()
    main_for("scheduler", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
