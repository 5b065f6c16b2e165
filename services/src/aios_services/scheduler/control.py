"""The scheduler's control-plane handlers: an agent's result by id, cancel, and stats."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from aios_schemas import (
    AgentStats,
    AiosError,
    BackendStats,
    CancelReply,
    CancelRequest,
    HoldQuery,
    HoldReply,
    QuotaQuery,
    QuotaReply,
    ResourceStats,
    ResultQuery,
    SchedulerStats,
    StatsQuery,
    SyscallResult,
)

from ..runtime.bus import Silent
from .core import Scheduler


class Control:
    def __init__(self, sched: Scheduler) -> None:
        self.s = sched

    async def query(self, q: ResultQuery) -> SyscallResult:
        """`ctl.scheduler.result`: an agent fetches its own stored result."""
        s = self.s
        stored = await s.results.get(q.id)
        if stored is None or stored.agent != q.agent:  # someone else's result does not exist for you
            held = s.held.get(q.id)
            if held is not None:
                state = "pending" if held.call.agent == q.agent else "taken"
            else:
                # "taken": the id is another agent's (what, whose or whether it ran is not said). An
                # agent that reused it hears it at once, instead of waiting for a result that
                # JetStream's de-duplication means will never come.
                state = "taken" if stored is not None else "unknown"
            raise AiosError("not_found", f"no result for {q.id}", details={"state": state})
        return stored.result

    async def cancel(self, req: CancelRequest) -> CancelReply:
        """`ctl.scheduler.cancel`: stop a syscall wherever it is (queued or running), free its slot."""
        s = self.s
        held = s.held.get(req.id)
        if held is None or held.call.agent != req.agent:
            return await self._not_mine(req)
        group = s.groups.get(held.group)
        err = AiosError("cancelled", "cancelled by the agent").to_reply()
        if held.dispatched is None:
            if group is not None:
                group.policy.remove(held.call.id)
        else:
            await s.executor.control(held.service, held.call.id, "cancel")
            if held.task is not None:
                held.task.cancel()
            if group is not None:
                now = time.monotonic()
                for b in group.backends.values():
                    b.running.pop(held.call.id, None)
                held.released = time.time()
                held.service_s += now - held.dispatched
                group.policy.on_finished(held.job, now - held.dispatched, now)
        await s.complete(held, group, SyscallResult.fail(held.call.id, err))
        return CancelReply(id=req.id, state="cancelled")

    async def _not_mine(self, req: CancelRequest) -> CancelReply:
        """A cancel for a syscall this replica does not hold. Every replica hears a cancel and the
        first answer wins: another replica may hold it, so unless its result is already stored,
        answer only after giving the holder time to answer first (and look again then)."""
        s = self.s
        stored = await s.results.get(req.id)
        if stored is None and s.replicas is not None and len(s.replicas.live) > 1:
            peers = await s.bus.gather(
                s.ns.ctl("scheduler", "holds"),
                HoldQuery(id=req.id),
                HoldReply,
                expect=len(s.replicas.live),
                timeout=s.settings.cancel_grace_s,
            )
            others = [p for p in peers if p.instance != s.settings.instance]
            if any(p.held for p in others) or len(others) < len(s.replicas.live) - 1:
                # The holder answers (a second answer would race it); and a peer that did not say
                # may be the holder, slow: only when every peer said "not mine" is it not found.
                raise Silent
            stored = await s.results.get(req.id)  # it may have finished meanwhile
        if stored is not None and stored.agent == req.agent:
            err = stored.result.error
            return CancelReply(
                id=req.id, state="cancelled" if err and err.code == "cancelled" else "finished"
            )
        raise AiosError("not_found", f"no syscall {req.id} of agent {req.agent!r}")

    async def holds(self, q: HoldQuery) -> HoldReply:
        """`ctl.scheduler.holds` (every replica answers): whether this replica holds a syscall."""
        return HoldReply(instance=self.s.settings.instance, held=q.id in self.s.held)

    async def quotas(self, q: QuotaQuery) -> QuotaReply:
        """What agents have left of their quotas (usage is in KV: any replica answers for all)."""
        left = await asyncio.gather(*(self.s.quotas.left(a) for a in q.agents))
        return QuotaReply(agents=dict(zip(q.agents, left, strict=True)))

    async def stats(self, q: StatsQuery) -> SchedulerStats:
        """Every live replica's view, merged (or only this one's with `local`)."""
        mine = self.local_stats(q)
        s = self.s
        if q.local or s.replicas is None or len(s.replicas.live) < 2:
            return mine
        ask = q.model_copy(update={"local": True})
        views = await s.bus.gather(
            s.ns.ctl("scheduler", "stats_local"),
            ask,
            SchedulerStats,
            expect=len(s.replicas.live),
            timeout=s.settings.stats_gather_s,
        )
        others = [v for v in views if v.instance != mine.instance]
        return merge_stats([mine, *others])

    def local_stats(self, q: StatsQuery) -> SchedulerStats:
        s = self.s
        now = time.monotonic()
        resources = []
        for g in s.groups.values():
            by_agent: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for h in g.running():
                by_agent[h.call.agent][0] += 1
            for j in g.policy.jobs(now):
                by_agent[j.agent][1] += 1
            resources.append(
                ResourceStats(
                    name=g.name,
                    policy=g.policy.name,
                    capacity=g.capacity,
                    running=len(g.running()),
                    queued=len(g.policy),
                    by_agent=dict(by_agent),
                    backends=[
                        BackendStats(
                            name=b.entry.name,
                            slots=b.slots,
                            running=len(b.running),
                            max_running_seen=b.max_running_seen,
                            breaker=b.breaker.state(now),
                        )
                        for b in g.backends.values()
                    ],
                )
            )
        return SchedulerStats(
            instance=s.settings.instance,
            held=len(s.held),
            replicas=list(s.replicas.live) if s.replicas else [s.settings.instance],
            sharing=not s.replicas.in_grace if s.replicas else True,
            counters=dict(s.counters),
            resources=resources,
            agents=list(s.accounts.items.values()) if q.agents else [],
        )


def merge_stats(views: list[SchedulerStats]) -> SchedulerStats:
    """One view of several replicas: counts add up (each replica holds its own share of the slots
    and its own syscalls); a backend's `max_running_seen` is the highest any one replica saw."""
    resources: dict[str, ResourceStats] = {}
    for v in views:
        for r in v.resources:
            cur = resources.get(r.name)
            resources[r.name] = r if cur is None else _merge_resource(cur, r)
    agents: dict[tuple[str, str | None], AgentStats] = {}
    for v in views:
        for a in v.agents:
            seen = agents.get((a.agent, a.program))
            agents[(a.agent, a.program)] = a if seen is None else _merge_agent(seen, a)
    counters: dict[str, int] = defaultdict(int)
    for v in views:
        for k, n in v.counters.items():
            counters[k] += n
    return SchedulerStats(
        instance="+".join(sorted(v.instance for v in views)),
        held=sum(v.held for v in views),
        replicas=sorted({r for v in views for r in v.replicas}),
        sharing=all(v.sharing for v in views),
        counters=dict(counters),
        resources=list(resources.values()),
        agents=list(agents.values()),
    )


def _merge_resource(a: ResourceStats, b: ResourceStats) -> ResourceStats:
    by_agent = {k: list(v) for k, v in a.by_agent.items()}
    for k, (run, queued) in b.by_agent.items():
        counts = by_agent.setdefault(k, [0, 0])
        counts[0] += run
        counts[1] += queued
    backends = {x.name: x for x in a.backends}
    for x in b.backends:
        cur = backends.get(x.name)
        backends[x.name] = (
            x
            if cur is None
            else cur.model_copy(
                update={
                    "slots": cur.slots + x.slots,
                    "running": cur.running + x.running,
                    "max_running_seen": max(cur.max_running_seen, x.max_running_seen),
                    "breaker": cur.breaker if cur.breaker == x.breaker else "mixed",
                }
            )
        )
    return a.model_copy(
        update={
            "capacity": a.capacity + b.capacity,
            "running": a.running + b.running,
            "queued": a.queued + b.queued,
            "by_agent": by_agent,
            "backends": list(backends.values()),
        }
    )


def _merge_agent(a: AgentStats, b: AgentStats) -> AgentStats:
    return a.model_copy(
        update={
            "calls": a.calls + b.calls,
            "tokens": a.tokens + b.tokens,
            "wait_s": a.wait_s + b.wait_s,
            "service_s": a.service_s + b.service_s,
            "suspensions": a.suspensions + b.suspensions,
        }
    )
