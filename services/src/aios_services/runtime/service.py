"""The life of a service process: tracing, connect, health endpoint, run until SIGTERM, drain.

Health means doing its job: "ok" only while the connection is usable (connected, reading, the
server answering) and every check the service registered on its bus passes (e.g. the scheduler's
consumer fetched recently); "degraded", with the problems listed, otherwise. A connection that stays
wedged although the server is reachable ends the process with EXIT_WEDGED, for its supervisor to
restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TypeVar

from pydantic import JsonValue, ValidationError

from aios_schemas import Health, HealthQuery

from .bus import Bus, Wedged
from .natsauth import kernel_inbox
from .settings import ServiceSettings
from .telemetry import export_spans_to, setup_tracing, tracing_installed

HealthDetails = Callable[[], dict[str, JsonValue]]
EXIT_WEDGED = 75  # EX_TEMPFAIL: restart me
Starter = Callable[[Bus, AsyncExitStack], Awaitable[HealthDetails | None]]


def configure_logging(name: str) -> None:
    logging.basicConfig(
        level=os.environ.get("AIOS_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )


async def serve_health(bus: Bus, name: str, instance: str, details: HealthDetails | None) -> None:
    started = time.time()

    async def health(q: HealthQuery) -> Health:
        problems = bus.problems()
        info: dict[str, JsonValue] = details() if (details and q.verbose) else {}
        if problems:
            info["problems"] = list[JsonValue](problems)
        return Health(
            service=name,
            instance=instance,
            status="degraded" if problems else "ok",
            pid=os.getpid(),
            started=started,
            details=info,
        )

    await bus.serve(bus.ns.ctl(name, "health"), HealthQuery, health)


async def run_service(
    name: str, settings: ServiceSettings, start: Starter, *, stop: asyncio.Event | None = None
) -> None:
    """Run one service until SIGTERM/SIGINT (or `stop` is set), then drain gracefully. Raises
    Wedged if its connection stayed unusable (the process should then exit with EXIT_WEDGED)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    log = logging.getLogger(name)
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Not possible outside the main thread (services run in-process in tests).
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        bus = await Bus.open(
            settings.nats_url,
            f"aios-{name}-{settings.instance}",
            settings.ns,
            inbox_prefix=kernel_inbox(name),
            replicas=settings.stream_replicas,
        )
        if tracing_installed() and name != "recorder":  # spans go to the recorder (not its own: a loop)
            export_spans_to(bus.publish_soon, bus.ns.service_event(name, "spans"))
        await bus.until_jetstream()
        watchdog = asyncio.create_task(bus.watch_connection(), name=f"{name} nats watchdog")
        stack.push_async_callback(cancel_and_wait, watchdog)
        details = await start(bus, stack)
        await serve_health(bus, name, settings.instance, details)
        log.info("%s ready (namespace %r)", name, settings.namespace)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            stopping.cancel()
            exc = watchdog.exception()
            log.critical("%s: %s; exiting to be restarted", name, exc)
            await bus.nc.close()  # what the cleanups send fails at once instead of timing out
            raise exc if isinstance(exc, Wedged) else Wedged(repr(exc))
        log.info("%s draining", name)
        await stack.aclose()  # stop loops the service started before the bus goes away
        await bus.drain(settings.drain_timeout_s)


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again until it does: on Python 3.11
    a cancel that lands while an `asyncio.wait_for` inside it is completing (nats-py's `flush` and
    `request` use one; the bus watchdog flushes every second) is swallowed, and the task goes on
    forever, so a single cancel and await can hang a service's shutdown (or it surfaces as that
    `wait_for`'s TimeoutError: logged, like any error the task ended with)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).warning("%s ended with %r", task.get_name(), task.exception())


S = TypeVar("S", bound=ServiceSettings)


def load_settings(name: str, cls: type[S]) -> S:
    """The service's settings from its environment; a bad value ends the process with one line that
    names the setting (its variable is AIOS_<NAME>), not a traceback."""
    try:
        return cls()
    except ValidationError as exc:
        errors = "; ".join(
            (f"AIOS_{str(e['loc'][0]).upper()}: " if e["loc"] else "") + e["msg"] for e in exc.errors()
        )
        sys.exit(f"aios {name}: bad settings: {errors}")


def main_for(name: str, settings: ServiceSettings, start: Starter) -> None:
    """Entry point body of `python -m aios_services.<name>`."""
    configure_logging(name)
    setup_tracing(name)
    try:
        if settings.event_loop == "uvloop":
            # uvloop: the same asyncio API on libuv; measured on this machine (bench.kernel_overhead,
            # four interleaved pairs) ~5-10% less CPU per syscall in every kernel process.
            import uvloop

            uvloop.run(run_service(name, settings, start))
        else:
            asyncio.run(run_service(name, settings, start))
    except Wedged:
        sys.exit(EXIT_WEDGED)


async def keep_running(name: str, loop: Callable[[], Awaitable[None]], *, backoff_s: float = 0.2) -> None:
    """Run a service's background loop forever: if it returns or fails (a bus hiccup, a bug), log
    it and start it again. A loop that silently died would leave a service healthy but deaf."""
    log = logging.getLogger(name)
    me = asyncio.current_task()
    while me is None or not me.cancelling():  # a swallowed cancel (see cancel_and_wait) still stops us
        try:
            await loop()
            log.warning("%s ended; restarting it", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting it", name)
        await asyncio.sleep(backoff_s)
