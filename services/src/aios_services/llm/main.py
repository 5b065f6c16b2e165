"""`python -m aios_services.llm`: load the catalogue, publish it, serve `exec.llm` and control."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack

import aiohttp
import nats
from nats.aio.msg import Msg

from aios_schemas import (
    AiosError,
    BackendEntry,
    ControlRequest,
    ExecRequest,
    ModelEntry,
    decode,
    encode,
    model_key,
)

from ..runtime import Bus, HealthDetails, cancel_and_wait, keep_running, main_for
from ..runtime.service import load_settings
from .backends import Backend
from .capacity import Aimd, CapacityProbe, metrics_url
from .config import ConfigError, LlmConfig, api_keys, load_config
from .contexts import CONTEXT_TTL_S, FINISHED_TTL_S, ContextStore, FinishedRuns
from .control import Runs
from .handlers import Deps, LlmHandlers, Model
from .settings import LlmSettings

log = logging.getLogger(__name__)


def build_models(cfg: LlmConfig, env: Mapping[str, str]) -> dict[str, Model]:
    keys = api_keys(cfg, env)
    return {
        name: Model(name, m.kind, [Backend(name, m.kind, b, api_key=keys.get(b.name)) for b in m.backends])
        for name, m in cfg.models.items()
    }


def catalogue(cfg: LlmConfig, adapted: Mapping[str, int | None] | None = None) -> list[ModelEntry]:
    """What the scheduler needs to route: each model's backends with their slots and limits
    (`adapted`: backend -> the concurrency its engine's state allows now, see capacity.py)."""
    adapted = adapted or {}
    return [
        ModelEntry(
            name=name,
            kind=m.kind,
            backends=[
                BackendEntry(
                    name=b.name,
                    slots=b.slots,
                    ahead=b.ahead,
                    limit=adapted.get(b.name),
                    rpm=b.rpm,
                    tpm=b.tpm,
                    continue_partial=b.capabilities.continue_partial,
                    priority=b.capabilities.priority,
                )
                for b in m.backends
            ],
        )
        for name, m in cfg.models.items()
    ]


async def start(
    bus: Bus, stack: AsyncExitStack, settings: LlmSettings, env: Mapping[str, str] | None = None
) -> HealthDetails:
    cfg = load_config(settings.llm_config)
    models = build_models(cfg, os.environ if env is None else env)
    for m in models.values():
        for b in m.backends:
            stack.push_async_callback(b.close)
    limits = await bus.ensure_kv(bus.ns.limits_bucket)
    adapted: dict[str, int | None] = {}  # backend -> the concurrency its engine allows now

    async def adapt(backend: str, limit: int | None) -> None:
        adapted[backend] = limit
        with contextlib.suppress(nats.errors.Error):
            await publish_catalogue()

    probes = capacity_probes(cfg, adapt)

    confirmed = [time.monotonic()]

    async def publish_catalogue() -> None:
        """This replica's models, one KV entry each, stamped: a replica that stops confirming them
        (gone without a goodbye) is dropped by the scheduler after `catalog_ttl_s`."""
        now = time.time()
        for entry in catalogue(cfg, adapted):
            stamped = entry.model_copy(update={"replica": settings.instance, "ts": now})
            await limits.put(model_key(entry.name, settings.instance), encode(stamped))
        confirmed[0] = time.monotonic()

    def catalogue_problem() -> str | None:
        """Unconfirmed for long, the scheduler stops routing here: not doing its job."""
        late = time.monotonic() - confirmed[0]
        return f"not confirmed for {late:.0f}s" if late > 3 * settings.catalog_refresh_s else None

    bus.add_check("catalogue", catalogue_problem)

    async def refresh_forever() -> None:
        while True:
            await asyncio.sleep(settings.catalog_refresh_s)
            with contextlib.suppress(nats.errors.Error):
                await publish_catalogue()

    async def withdraw() -> None:  # a graceful stop: the scheduler stops routing here at once
        for name in cfg.models:
            with contextlib.suppress(nats.errors.Error):
                await limits.delete(model_key(name, settings.instance))

    await publish_catalogue()
    refresher = asyncio.create_task(keep_running("catalogue refresh", refresh_forever))
    stack.push_async_callback(withdraw)
    stack.push_async_callback(cancel_and_wait, refresher)

    if probes:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        for probe in probes:
            task = asyncio.create_task(
                keep_running(f"capacity of {probe.backend}", functools.partial(probe.run, session))
            )
            stack.push_async_callback(cancel_and_wait, task)
    contexts = ContextStore(await bus.ensure_kv(bus.ns.contexts_bucket, ttl_s=CONTEXT_TTL_S))
    bucket = bus.ns.finished_bucket
    finished = FinishedRuns(await bus.ensure_kv(bucket, ttl_s=FINISHED_TTL_S), bucket)
    runs = Runs()
    handlers = LlmHandlers(Deps(bus=bus, models=models, contexts=contexts, runs=runs, finished=finished))

    async def on_control(msg: Msg) -> None:
        try:
            runs.control(decode(msg.data, ControlRequest))
        except AiosError as exc:
            log.warning("bad control message: %s", exc.message)

    # No queue group: every replica hears every control message; the one running the syscall acts.
    await bus.nc.subscribe(bus.ns.ctl("llm", "control"), cb=on_control)
    # Each lane (model, backend) this replica serves has its own exec subject, so the scheduler
    # reaches a replica that serves the backend it chose; `exec.llm` takes any call (first backend).
    subjects = [bus.ns.exec("llm")] + [
        bus.ns.exec_lane("llm", f"llm.{m.name}", b.name) for m in models.values() for b in m.backends
    ]
    for subject in subjects:
        await bus.serve(
            subject, ExecRequest, handlers.exec, queue="llm", max_concurrency=settings.max_concurrency
        )
    return lambda: {
        "models": {n: [b.name for b in m.backends] for n, m in models.items()},
        "running": len(runs),
        **(
            {
                "adaptive": {
                    p.backend: {"limit": p.limit, "readings": p.readings, "error": p.last_error}
                    for p in probes
                }
            }
            if probes
            else {}
        ),
    }


def capacity_probes(
    cfg: LlmConfig, on_change: Callable[[str, int | None], Awaitable[None]]
) -> list[CapacityProbe]:
    """One probe per backend whose concurrency adapts to its engine (`adaptive = true`)."""
    return [
        CapacityProbe(
            b.name,
            b.metrics_url or metrics_url(b.base_url),
            Aimd(ceiling=b.slots),
            b.adaptive_interval_s,
            on_change,
        )
        for m in cfg.models.values()
        for b in m.backends
        if b.adaptive
    ]


def main() -> None:
    settings = load_settings("llm", LlmSettings)
    try:
        build_models(load_config(settings.llm_config), os.environ)
    except ConfigError as exc:
        sys.exit(f"aios llm: bad config: {exc}")
    main_for("llm", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
