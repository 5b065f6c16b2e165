"""The scheduler's control-plane handlers: an agent's result by id, cancel, and stats."""

from __future__ import annotations

import time
from collections import defaultdict

from aios_schemas import (
    AiosError,
    BackendStats,
    CancelReply,
    CancelRequest,
    ResourceStats,
    ResultQuery,
    SchedulerStats,
    StatsQuery,
    SyscallResult,
)

from .core import Scheduler


class Control:
    def __init__(self, sched: Scheduler) -> None:
        self.s = sched

    async def query(self, q: ResultQuery) -> SyscallResult:
        """`ctl.scheduler.result`: an agent fetches its own stored result."""
        s = self.s
        s.tokens.authenticate(q.token, q.agent)
        stored = await s.results.get(q.id)
        if stored is None or stored.agent != q.agent:  # someone else's result does not exist for you
            held = s.held.get(q.id)
            state = "pending" if held is not None and held.call.agent == q.agent else "unknown"
            raise AiosError("not_found", f"no result for {q.id}", details={"state": state})
        return stored.result

    async def cancel(self, req: CancelRequest) -> CancelReply:
        """`ctl.scheduler.cancel`: stop a syscall wherever it is (queued or running), free its slot."""
        s = self.s
        s.tokens.authenticate(req.token, req.agent)
        held = s.held.get(req.id)
        if held is None or held.call.agent != req.agent:
            stored = await s.results.get(req.id)
            if stored is not None and stored.agent == req.agent:
                return CancelReply(id=req.id, state="finished")
            raise AiosError("not_found", f"no syscall {req.id} of agent {req.agent!r}")
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

    async def stats(self, q: StatsQuery) -> SchedulerStats:
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
