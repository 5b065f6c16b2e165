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
