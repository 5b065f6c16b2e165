"""The operator questions the console asks on the bus, each one request to the service that owns the
answer (scheduler, recorder, access, memory, storage), over the gateway's own connection.

Why the gateway's own user and not the operator's: the gateway is the process that faces the network,
so it holds no whole-bus credentials; its user may publish exactly the `ctl` subjects of
`natsauth.CONSOLE_CTL` (and nothing else an operator may: no agent or rule changes, no KV writes). A
second, console-only NATS user would add no isolation: the same process would hold both passwords."""

from __future__ import annotations

from typing import TypeVar

import nats
from pydantic import BaseModel, JsonValue

from aios_schemas import (
    AiosError,
    Approval,
    ApprovalDecide,
    ApprovalList,
    ApprovalListReply,
    FilesInspect,
    FilesInspectReply,
    FilesList,
    FilesRead,
    FilesVersions,
    QuotaQuery,
    QuotaReply,
    SchedulerStats,
    StatsQuery,
)
from aios_schemas.explore import SeriesQuery, SeriesReply, SyscallListQuery, SyscallListReply
from aios_schemas.memory import MemoryInspect, MemoryInspectReply, MemoryList
from aios_schemas.traces import TraceQuery, TraceReply

from ...runtime import Bus
from ...runtime.natsauth import CONSOLE_CTL

R = TypeVar("R", bound=BaseModel)


class Operator:
    def __init__(self, bus: Bus, timeout_s: float = 10.0) -> None:
        self.bus = bus
        self.timeout_s = timeout_s

    async def _ask(self, service: str, op: str, req: BaseModel, reply: type[R]) -> R:
        assert (service, op) in CONSOLE_CTL, f"ctl.{service}.{op} is not granted to the console"
        try:
            return await self.bus.request(self.bus.ns.ctl(service, op), req, reply, timeout=self.timeout_s)
        except (TimeoutError, nats.errors.TimeoutError):
            raise AiosError("backend_unavailable", f"the {service} service did not answer") from None
        except nats.errors.NoRespondersError:
            raise AiosError("backend_unavailable", f"the {service} service is not running") from None

    async def stats(self) -> SchedulerStats:
        return await self._ask("scheduler", "stats", StatsQuery(agents=True), SchedulerStats)

    async def quotas(self, agents: list[str]) -> QuotaReply:
        return await self._ask("scheduler", "quotas", QuotaQuery(agents=agents), QuotaReply)

    async def approvals(self) -> list[Approval]:
        return (await self._ask("access", "approvals", ApprovalList(), ApprovalListReply)).approvals

    async def decide(
        self, sid: str, approve: bool, args: dict[str, JsonValue] | None, reason: str
    ) -> Approval:
        req = ApprovalDecide(id=sid, approve=approve, args=args, reason=reason, by="console")
        return await self._ask("access", "decide", req, Approval)

    async def series(self, q: SeriesQuery) -> SeriesReply:
        return await self._ask("recorder", "series", q, SeriesReply)

    async def syscalls(self, q: SyscallListQuery) -> SyscallListReply:
        return await self._ask("recorder", "syscalls", q, SyscallListReply)

    async def trace(self, sid: str) -> TraceReply:
        return await self._ask("recorder", "trace", TraceQuery(id=sid), TraceReply)

    async def memory(self, agent: str, offset: int, limit: int) -> MemoryInspectReply:
        req = MemoryInspect(agent=agent, payload=MemoryList(limit=limit, offset=offset))
        return await self._ask("memory", "inspect", req, MemoryInspectReply)

    async def files(self, agent: str, payload: FilesList | FilesRead | FilesVersions) -> FilesInspectReply:
        return await self._ask(
            "storage", "inspect", FilesInspect(agent=agent, payload=payload), FilesInspectReply
        )
