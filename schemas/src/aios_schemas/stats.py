"""What the scheduler reports about itself on `aios.v1.ctl.scheduler.stats` (for `aios top`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

_M = ConfigDict(extra="forbid", frozen=True)


class StatsQuery(BaseModel):
    model_config = _M
    agents: bool = Field(True, description="Include per-agent accounting.")
    local: bool = Field(
        False, description="Only the answering replica's view (default: every live replica's, merged)."
    )


class BackendStats(BaseModel):
    model_config = _M
    name: str = Field(description="Backend name.")
    slots: int = Field(description="Capacity.")
    running: int = Field(description="Calls running now.")
    max_running_seen: int = Field(
        description="Most calls ever running at once (never above slots; merged views: the highest"
        " of any one replica)."
    )
    breaker: str = Field(description="closed | open | half_open")


class ResourceStats(BaseModel):
    model_config = _M
    name: str = Field(description="Resource, e.g. llm.<model>.")
    policy: str = Field(description="Scheduling policy.")
    capacity: int = Field(description="Sum of the backends' slots.")
    running: int = Field(description="Calls running.")
    queued: int = Field(description="Calls waiting.")
    backends: list[BackendStats] = Field(default_factory=list)
    by_agent: dict[str, list[int]] = Field(
        default_factory=dict, description="agent -> [running, queued] on this resource."
    )


class AgentStats(BaseModel):
    model_config = _M
    agent: str = Field(description="Agent name.")
    program: str | None = Field(None, description="Program/session (None: totals of the agent).")
    calls: int = Field(0, description="Finished syscalls.")
    tokens: int = Field(0, description="LLM tokens used (prompt + completion).")
    wait_s: float = Field(0.0, description="Total time queued.")
    service_s: float = Field(0.0, description="Total time running.")
    suspensions: int = Field(0, description="Times a call was suspended (context switches).")


class SchedulerStats(BaseModel):
    model_config = _M
    instance: str = Field(description="Scheduler replica (merged views: the replicas joined by '+').")
    held: int = Field(description="Accepted syscalls not yet finished.")
    replicas: list[str] = Field(default_factory=list, description="Live scheduler replicas it knows.")
    sharing: bool = Field(True, description="False during a new replica's start-up grace period.")
    counters: dict[str, int] = Field(default_factory=dict, description="accepted, done, failed, ...")
    resources: list[ResourceStats] = Field(default_factory=list)
    agents: list[AgentStats] = Field(default_factory=list)


class QuotaQuery(BaseModel):
    """Operator -> scheduler (`ctl.scheduler.quotas`): what these agents have left of their quotas."""

    model_config = _M
    agents: list[str] = Field(min_length=1, max_length=500, description="Agent names (a page of them).")


class QuotaLeft(BaseModel):
    """One period of an agent's quota: its limits and what the current window has used."""

    model_config = _M
    per: str = Field(description="lifetime | minute | hour | day")
    calls: int | None = Field(None, description="Calls allowed in the period (None: not limited).")
    calls_used: int = Field(0, description="Calls counted in the current window.")
    tokens: int | None = Field(None, description="Tokens allowed in the period (None: not limited).")
    tokens_used: int = Field(0, description="Tokens counted (and reserved) in the current window.")


class QuotaReply(BaseModel):
    model_config = _M
    agents: dict[str, list[QuotaLeft]] = Field(
        default_factory=dict, description="agent -> its quota's periods (empty: no quota applies)."
    )
