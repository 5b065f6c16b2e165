"""The syscall envelope, its result, lifecycle events and health replies (DESIGN §4)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from .errors import ErrorReply
from .files import FilesKind, FilesPayload, FilesResult
from .llm import ChatReply, EmbedReply, LlmChat, LlmEmbed, Usage
from .memory import (
    MemoryAdd,
    MemoryAddReply,
    MemoryDelete,
    MemoryDeleteReply,
    MemoryGet,
    MemoryGetReply,
    MemoryList,
    MemoryListReply,
    MemorySearch,
    MemorySearchReply,
    MemoryUpdate,
    MemoryUpdateReply,
)
from .tools import ToolsKind, ToolsPayload, ToolsResult

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$"
# An agent's name is one subject token (no dots, no wildcards): its subjects carry it.
AGENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

# Every syscall payload, tagged by `kind`. New kinds are added here (an additive change): the payload
# class to `AnyPayload`, its `kind` to `SyscallKind`, its reply class to `AnyResult`.
AnyPayload = (
    LlmChat
    | LlmEmbed
    | MemoryAdd
    | MemoryGet
    | MemoryUpdate
    | MemoryDelete
    | MemoryList
    | MemorySearch
    | FilesPayload
    | ToolsPayload
)
SyscallPayload = Annotated[AnyPayload, Field(discriminator="kind")]
SyscallKind = (
    Literal[
        "llm.chat",
        "llm.embed",
        "memory.add",
        "memory.get",
        "memory.update",
        "memory.delete",
        "memory.list",
        "memory.search",
    ]
    | FilesKind
    | ToolsKind
)
# Every ok-result, tagged by the `kind` it answers.
AnyResult = (
    ChatReply
    | EmbedReply
    | MemoryAddReply
    | MemoryGetReply
    | MemoryUpdateReply
    | MemoryDeleteReply
    | MemoryListReply
    | MemorySearchReply
    | FilesResult
    | ToolsResult
)
ResultPayload = Annotated[AnyResult, Field(discriminator="kind")]

SyscallState = Literal[
    "accepted", "queued", "dispatched", "suspended", "resumed", "done", "failed", "cancelled"
]


class Syscall(BaseModel):
    """What an agent sends: who it is, what it wants, by when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN, description="Client-made id (UUIDv7); also the JetStream Msg-Id.")
    agent: str = Field(pattern=AGENT_PATTERN, description="Agent name making the call.")
    token: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        repr=False,
        description="Deprecated and ignored: an agent is who NATS authenticated it as (its token is its"
        " NATS password), and syscalls travel without secrets. Stripped at admission.",
    )
    session: str | None = Field(
        None, pattern=NAME_PATTERN, description="Agent program/session id: the unit of fair scheduling."
    )
    payload: SyscallPayload = Field(description="What to do; its `kind` names the syscall.")
    created: float = Field(
        default_factory=time.time,
        ge=0,
        allow_inf_nan=False,
        strict=True,
        description="Unix time the client made the call (a finite number).",
    )
    deadline: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        strict=True,
        description="Unix time (seconds, a finite number) after which the call is abandoned"
        " (deadline_exceeded). Missing or null: the scheduler's default, `default_deadline_s` (600 s"
        " unless configured) after `created`. 0 or less is refused (invalid_request): it is not"
        ' "no deadline" but a moment long past; a deadline already past is deadline_exceeded.',
    )
    priority: int = Field(
        0, ge=-1000, le=1000, description="Static priority: lower runs first (vLLM convention)."
    )

    @property
    def kind(self) -> SyscallKind:
        return self.payload.kind

    def digest(self) -> str:
        """What the call asks for, as a hash: the same id re-sent with a different request is a
        `conflict`, not a replay (the token, creation time and deadline are not part of it)."""
        what = self.model_dump(mode="json", include={"agent", "session", "priority", "payload"})
        return hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class SyscallResult(BaseModel):
    """What comes back: either `result` (status ok) or `error` (status error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Syscall id this answers.")
    status: Literal["ok", "error"] = Field(description="Outcome.")
    result: ResultPayload | None = Field(None, description="Payload on success.")
    error: ErrorReply | None = Field(None, description="Error on failure.")
    request: str | None = Field(
        None, description="Digest of the syscall this answers (`Syscall.digest()`), to detect id reuse."
    )
    queued_ms: float = Field(0.0, ge=0, description="Time from acceptance to dispatch.")
    service_ms: float = Field(0.0, ge=0, description="Time spent executing.")

    @classmethod
    def ok(cls, id: str, result: AnyResult, **timing: float) -> SyscallResult:
        return cls(id=id, status="ok", result=result, **timing)

    @classmethod
    def fail(cls, id: str, error: ErrorReply, **timing: float) -> SyscallResult:
        return cls(id=id, status="error", error=error, **timing)


class ExecRequest(BaseModel):
    """Scheduler -> worker: run this syscall now, on this resource, before the deadline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    syscall: Syscall = Field(description="The admitted syscall.")
    resource: str = Field(description="Resource the scheduler charged for the call.")
    deadline: float = Field(description="Unix time by which the worker must answer.")
    priority: int = Field(0, description="Effective priority computed by the scheduler (lower first).")
    backend: str | None = Field(None, description="Backend chosen by the scheduler (llm.*).")
    resume: bool = Field(False, description="Continue from the context snapshot of this syscall.")
    preemptible: bool = Field(False, description="The scheduler may ask to suspend this run.")
    again: bool = Field(
        False,
        description="The syscall was sent before (its scheduler crashed holding it, or its worker went"
        " silent): a worker that already finished it answers with that reply instead of running it twice.",
    )


class ExecReply(BaseModel):
    """Worker -> scheduler: the run finished (`done`, with the result) or was `suspended`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outcome: Literal["done", "suspended"] = Field(description="What happened to the run.")
    result: SyscallResult | None = Field(None, description="Set when outcome is done.")
    usage: Usage = Field(default_factory=Usage, description="Tokens this run consumed (also if suspended).")


class ControlRequest(BaseModel):
    """Scheduler -> workers (broadcast): suspend or cancel the run of a syscall, wherever it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN, description="Syscall id.")
    action: Literal["suspend", "cancel"] = Field(description="What to do with the run.")


class CancelRequest(BaseModel):
    """Agent -> scheduler: cancel my syscall, queued or running."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN, description="Syscall id.")
    agent: str = Field(pattern=AGENT_PATTERN, description="Agent that made the call.")
    token: str | None = Field(
        None, min_length=1, max_length=512, repr=False, description="Deprecated and ignored (see Syscall)."
    )


class CancelReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(description="Syscall id.")
    state: Literal["cancelled", "finished"] = Field(
        description="cancelled: stopped now; finished: it had already completed."
    )


class HoldQuery(BaseModel):
    """Scheduler -> its peer replicas: which of you holds this syscall (queued or running)?"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN, description="Syscall id.")


class HoldReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    instance: str = Field(description="The answering scheduler replica.")
    held: bool = Field(description="Whether it holds the syscall.")


class SyscallEvent(BaseModel):
    """A state change of one syscall, on `aios.v1.evt.syscall.<state>`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Syscall id.")
    state: SyscallState = Field(description="New state.")
    agent: str = Field(description="Agent.")
    session: str | None = Field(None, description="Agent program/session.")
    kind: str = Field(description="Syscall kind.")
    resource: str | None = Field(None, description="Resource, once known.")
    ts: float = Field(default_factory=time.time, description="Unix time of the change.")
    details: dict[str, JsonValue] = Field(default_factory=dict, description="State-specific data.")


class ResultQuery(BaseModel):
    """Ask the scheduler for the stored result of a syscall (after a reconnect)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN, description="Syscall id.")
    agent: str = Field(pattern=AGENT_PATTERN, description="Agent that made the call.")
    token: str | None = Field(
        None, min_length=1, max_length=512, repr=False, description="Deprecated and ignored (see Syscall)."
    )


class HealthQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    verbose: bool = Field(False, description="Include details.")


class Health(BaseModel):
    """Reply on `aios.v1.ctl.<service>.health`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str = Field(description="Service name.")
    instance: str = Field(description="Replica id.")
    status: Literal["ok", "degraded"] = Field(description="Overall health.")
    pid: int = Field(description="OS process id.")
    started: float = Field(description="Unix start time.")
    details: dict[str, JsonValue] = Field(default_factory=dict, description="Service-specific state.")
