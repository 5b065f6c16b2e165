"""Observability on the bus: OpenTelemetry spans as every kernel process exports them (to the
recorder, in the events stream on `evt.<service>.spans`), and the recorder's queries."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue


class SpanRecord(BaseModel):
    """One finished span (OpenTelemetry's fields that a trace view needs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trace_id: str = Field(description="32 hex digits.")
    span_id: str = Field(description="16 hex digits.")
    parent_id: str | None = Field(None, description="The parent span's id (None: a root).")
    name: str = Field(description="What the span measured, e.g. `run llm.chat`.")
    service: str = Field(description="The process that recorded it (its OpenTelemetry service.name).")
    start: float = Field(description="Unix time it started.")
    end: float = Field(description="Unix time it ended.")
    status: str = Field("unset", description="ok | error | unset")
    attributes: dict[str, JsonValue] = Field(default_factory=dict, description="Its attributes.")


class SpanBatch(BaseModel):
    """What an exporter publishes: the spans one process finished since its last batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    spans: list[SpanRecord] = Field(description="Finished spans.")


class TraceQuery(BaseModel):
    """Operator -> recorder (`ctl.recorder.trace`): one syscall's history, or an agent's recent ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str | None = Field(None, description="A syscall id.")
    agent: str | None = Field(None, description="An agent: its recent syscalls.")
    limit: int = Field(50, ge=1, le=10_000, description="How many syscalls at most (with `agent`).")
    archive: bool = Field(False, description="Read the Parquet archives on S3 instead of the DuckDB file.")


class TraceEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    state: str
    ts: float
    agent: str
    kind: str
    resource: str | None = None
    details: dict[str, JsonValue] = Field(default_factory=dict)


class TraceReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    events: list[TraceEvent] = Field(default_factory=list, description="State changes, in time order.")
    spans: list[SpanRecord] = Field(default_factory=list, description="Spans of the syscall's trace(s).")


class UsageQuery(BaseModel):
    """Operator -> recorder (`ctl.recorder.stats`): per agent and resource, since a time."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    since: float | None = Field(None, description="Unix time (default: everything recorded).")
    agent: str | None = Field(None, description="Only this agent.")


class UsageRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    agent: str
    resource: str
    calls: int
    errors: int
    tokens: int
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    cost: float | None = Field(None, description="When a price per 1k tokens is configured.")


class UsageReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rows: list[UsageRow] = Field(default_factory=list)
