"""What agents used: per agent/program totals (for `aios top`) and quota enforcement (in KV, so
every scheduler replica sees the same usage)."""

from __future__ import annotations

import fnmatch

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from aios_schemas import AgentStats, AiosError

from ..runtime.kvcas import cas_update
from .groups import Held
from .settings import Quota


class Usage(BaseModel):
    """An agent's lifetime usage, in KV `AIOS_LIMITS` under `usage.<agent>`."""

    model_config = ConfigDict(extra="forbid")
    calls: int = 0
    tokens: int = 0


class Quotas:
    def __init__(self, kv: KeyValue, quotas: dict[str, Quota]) -> None:
        self.kv = kv
        self.quotas = quotas

    def quota(self, agent: str) -> Quota | None:
        """The first quota whose pattern matches the agent."""
        for pattern, quota in self.quotas.items():
            if fnmatch.fnmatchcase(agent, pattern):
                return quota
        return None

    async def usage(self, agent: str) -> Usage:
        try:
            entry = await self.kv.get(f"usage.{agent}")
        except KeyNotFoundError:
            return Usage()
        return Usage.model_validate_json(entry.value or b"{}")

    async def check(self, agent: str) -> None:
        """Raise quota_exceeded if the agent has used up its quota."""
        quota = self.quota(agent)
        if quota is None:
            return
        usage = await self.usage(agent)
        if quota.calls is not None and usage.calls >= quota.calls:
            raise AiosError("quota_exceeded", f"agent {agent!r} used its {quota.calls} calls")
        if quota.tokens is not None and usage.tokens >= quota.tokens:
            raise AiosError("quota_exceeded", f"agent {agent!r} used its {quota.tokens} tokens")

    async def charge(self, agent: str, tokens: int) -> None:
        if self.quota(agent) is None:
            return

        def add(current: bytes | None) -> bytes:
            usage = Usage.model_validate_json(current) if current else Usage()
            return Usage(calls=usage.calls + 1, tokens=usage.tokens + tokens).model_dump_json().encode()

        await cas_update(self.kv, f"usage.{agent}", add)


class Accounts:
    """Totals per agent (program None) and per agent program, kept by this replica."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str | None], AgentStats] = {}

    def record(self, held: Held, *, suspended: bool = False) -> None:
        for key in ((held.call.agent, None), (held.call.agent, held.job.program)):
            acc = self.items.get(key) or AgentStats(agent=key[0], program=key[1])
            if suspended:
                acc = acc.model_copy(update={"suspensions": acc.suspensions + 1})
            else:
                acc = acc.model_copy(
                    update={
                        "calls": acc.calls + 1,
                        "tokens": acc.tokens + held.tokens,
                        "wait_s": acc.wait_s + held.wait_s,
                        "service_s": acc.service_s + held.service_s,
                    }
                )
            self.items[key] = acc
