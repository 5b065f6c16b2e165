"""`aios top`: a live view of every resource: capacity, running, queued, by agent.

The scheduler reports the resources it has scheduled; the models the llm service serves (its
catalogue in KV) are added as idle rows (policy "" until the scheduler has seen a call for them),
so a model shows before its first call.
"""

from __future__ import annotations

import asyncio
import logging

import nats
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError
from pydantic import ValidationError
from rich.console import Group as RichGroup
from rich.live import Live
from rich.table import Table

from aios_schemas import (
    BackendStats,
    ModelEntry,
    Namespace,
    ResourceStats,
    SchedulerStats,
    StatsQuery,
    decode_reply,
    encode,
)
from aios_sdk.config import server_urls

log = logging.getLogger(__name__)


async def _catalogue(nc: Client, ns: Namespace, timeout: float) -> list[ModelEntry]:
    """The models the llm replicas publish (KV `model.*` in the limits bucket, one entry per replica:
    merged by name, the union of their backends)."""
    try:
        kv = await nc.jetstream().key_value(ns.limits_bucket)
    except BucketNotFoundError:
        return []
    watcher = await kv.watch("model.>", ignore_deletes=True)
    models = []
    try:
        # The watcher yields None once it has delivered every entry there is.
        while (entry := await watcher.updates(timeout)) is not None:  # type: ignore[no-untyped-call]
            try:
                models.append(ModelEntry.model_validate_json(entry.value or b""))
            except ValidationError:
                log.warning("ignoring malformed catalogue entry %s", entry.key)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    merged: dict[str, ModelEntry] = {}
    for m in models:
        prev = merged.get(m.name)
        if prev is not None:
            lanes = {b.name: b for b in [*prev.backends, *m.backends]}
            m = m.model_copy(update={"backends": list(lanes.values())})
        merged[m.name] = m
    return list(merged.values())


def with_catalogue(st: SchedulerStats, models: list[ModelEntry]) -> SchedulerStats:
    """`st` plus an idle row for each served model the scheduler has not scheduled yet."""
    known = {r.name for r in st.resources}
    idle = [
        ResourceStats(
            name=f"llm.{m.name}",
            policy="",
            capacity=sum(b.slots for b in m.backends),
            running=0,
            queued=0,
            backends=[
                BackendStats(name=b.name, slots=b.slots, running=0, max_running_seen=0, breaker="closed")
                for b in m.backends
            ],
        )
        for m in models
        if f"llm.{m.name}" not in known
    ]
    return st.model_copy(update={"resources": [*st.resources, *sorted(idle, key=lambda r: r.name)]})


async def fetch_stats(nats_url: str, ns: Namespace, timeout: float = 2.0) -> SchedulerStats:
    """The scheduler's stats, with the catalogue's models it has not seen a call for yet."""
    nc = await nats.connect(server_urls(nats_url), connect_timeout=2, allow_reconnect=False)
    try:
        msg = await nc.request(ns.ctl("scheduler", "stats"), encode(StatsQuery()), timeout=timeout)
        stats = decode_reply(msg.data, msg.headers, SchedulerStats)
        return with_catalogue(stats, await _catalogue(nc, ns, timeout))
    finally:
        await nc.close()


def render(st: SchedulerStats) -> RichGroup:
    res = Table(title=f"AIOS scheduler {st.instance}: {st.held} held, {dict(st.counters)}")
    for col in ("resource", "policy", "capacity", "running", "queued", "backends", "top agents (run/queued)"):
        res.add_column(col)
    for r in st.resources:
        backends = ", ".join(f"{b.name} {b.running}/{b.slots} {b.breaker}" for b in r.backends)
        busiest = sorted(r.by_agent.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:5]
        agents = ", ".join(f"{a} {rq[0]}/{rq[1]}" for a, rq in busiest)
        res.add_row(
            r.name,
            r.policy or "-",
            str(r.capacity),
            str(r.running),
            str(r.queued),
            backends,
            agents,
        )
    acc = Table(title="agents")
    for col in ("agent", "calls", "tokens", "wait s", "service s", "suspensions"):
        acc.add_column(col)
    totals = sorted((a for a in st.agents if a.program is None), key=lambda a: -a.calls)[:15]
    for a in totals:
        acc.add_row(
            a.agent, str(a.calls), str(a.tokens), f"{a.wait_s:.2f}", f"{a.service_s:.2f}", str(a.suspensions)
        )
    return RichGroup(res, acc)


async def live(nats_url: str, ns: Namespace, interval: float = 1.0) -> None:
    with Live(render(await fetch_stats(nats_url, ns)), refresh_per_second=4) as view:
        while True:
            await asyncio.sleep(interval)
            view.update(render(await fetch_stats(nats_url, ns)))
