"""The recorder's queries for the web console: syscalls by filter, a page at a time
(`ctl.recorder.syscalls`), and finished calls over time (`ctl.recorder.series`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .envelope import AGENT_PATTERN

_M = ConfigDict(extra="forbid", frozen=True)


class SyscallListQuery(BaseModel):
    """Operator -> recorder (`ctl.recorder.syscalls`): recorded syscalls, newest first, one page."""

    model_config = _M
    agent: str | None = Field(None, pattern=AGENT_PATTERN, description="Only this agent's.")
    kind: str | None = Field(
        None, max_length=100, description="Only this kind (`llm.chat`), or a family (`llm`: every `llm.*`)."
    )
    state: str | None = Field(
        None, max_length=20, description="Only syscalls whose latest state is this (e.g. `queued`, `done`)."
    )
    since: float | None = Field(None, description="Only syscalls first seen at or after this Unix time.")
    until: float | None = Field(None, description="Only syscalls first seen at or before this Unix time.")
    offset: int = Field(0, ge=0, le=1_000_000, description="Skip this many (paging).")
    limit: int = Field(50, ge=1, le=500, description="At most this many.")


class SyscallSummary(BaseModel):
    """One syscall as its events tell it."""

    model_config = _M
    id: str = Field(description="Syscall id.")
    agent: str = Field(description="The agent that made it.")
    kind: str = Field(description="Syscall kind.")
    resource: str | None = Field(None, description="Resource, once known.")
    state: str = Field(description="Its latest state.")
    started: float = Field(description="Unix time of its first event.")
    updated: float = Field(description="Unix time of its latest event.")
    tokens: int | None = Field(None, description="Tokens used (once finished).")
    queued_ms: float | None = Field(None, description="Time it waited (once finished).")
    service_ms: float | None = Field(None, description="Time it ran (once finished).")
    backend: str | None = Field(None, description="The backend that served it (last one).")
    code: str | None = Field(None, description="Error code, if it failed.")


class SyscallListReply(BaseModel):
    model_config = _M
    syscalls: list[SyscallSummary] = Field(default_factory=list, description="Newest first.")
    more: bool = Field(False, description="More match (ask again with a larger offset).")


class SeriesQuery(BaseModel):
    """Operator -> recorder (`ctl.recorder.series`): finished syscalls per time step."""

    model_config = _M
    since: float = Field(description="Unix time of the first step.")
    step_s: float = Field(10.0, ge=1.0, le=86_400.0, description="Width of a step, seconds.")
    resource: str | None = Field(None, max_length=200, description="Only this resource.")


class SeriesPoint(BaseModel):
    model_config = _M
    ts: float = Field(description="Unix time the step starts.")
    calls: int = Field(description="Syscalls that finished in the step.")
    errors: int = Field(description="Of those, the ones that did not end `done`.")
    tokens: int = Field(description="Tokens they used.")
    p50_ms: float | None = Field(None, description="Median latency (queued + service), ms.")
    p99_ms: float | None = Field(None, description="99th percentile latency, ms.")


class SeriesReply(BaseModel):
    model_config = _M
    points: list[SeriesPoint] = Field(default_factory=list, description="Steps with calls, in time order.")
