"""`aios top`: a live view of every resource: capacity, running, queued, by agent."""

from __future__ import annotations

import asyncio

import nats
from rich.console import Group as RichGroup
from rich.live import Live
from rich.table import Table

from aios_schemas import Namespace, SchedulerStats, StatsQuery, decode_reply, encode


async def fetch_stats(nats_url: str, ns: Namespace, timeout: float = 2.0) -> SchedulerStats:
    nc = await nats.connect(nats_url, connect_timeout=2, allow_reconnect=False)
    try:
        msg = await nc.request(ns.ctl("scheduler", "stats"), encode(StatsQuery()), timeout=timeout)
        return decode_reply(msg.data, msg.headers, SchedulerStats)
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
        res.add_row(r.name, r.policy, str(r.capacity), str(r.running), str(r.queued), backends, agents)
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
