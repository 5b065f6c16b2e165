"""What the scheduler needs to know about resources, published by the services that own them in KV
`AIOS_LIMITS`: each model's backends with their slots, rate limits and capabilities (`model.*`), and
every other resource's lanes (`res.*`: memory, files, each tool)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

_KEY_UNSAFE = re.compile(r"[^-/_=.a-zA-Z0-9]")


class BackendEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Unique backend name.")
    slots: int = Field(ge=1, description="Concurrent requests it serves.")
    ahead: int = Field(
        0, ge=0, description="Requests sent beyond `slots` to wait in the backend's own queue (never more)."
    )
    limit: int | None = Field(
        None,
        ge=1,
        description="What the engine's own state says it takes now (adaptive capacity): at most `slots`.",
    )
    rpm: int | None = Field(None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute (input + max output).")
    continue_partial: bool = Field(False, description="Can resume a suspended generation.")
    priority: bool = Field(False, description="Accepts a per-request priority.")

    @property
    def usable(self) -> int:
        """Requests the scheduler may have at this backend: its slots (or the adaptive limit, if
        lower) plus what may wait in its own queue."""
        return (self.slots if self.limit is None else min(self.slots, self.limit)) + self.ahead


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Model name agents use.")
    kind: str = Field("chat", description="chat | embedding")
    backends: list[BackendEntry] = Field(min_length=1, description="Backends that serve it.")
    replica: str | None = Field(
        None, description="The llm replica that serves it this way (replicas may differ in config)."
    )
    ts: float | None = Field(
        None, description="Unix time the replica last confirmed it; stale entries are ignored."
    )


def model_key(model: str, replica: str | None = None) -> str:
    """KV key of a model's entry (one per serving replica). Model names may hold characters NATS keys
    cannot (`llama3:8b`)."""
    key = "model." + _KEY_UNSAFE.sub("_", model)
    return key if replica is None else key + "=" + _KEY_UNSAFE.sub("_", replica)


class ResourceEntry(BaseModel):
    """A non-LLM resource one worker replica serves (memory, files, a tool), with its lanes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Resource name the scheduler queues calls for (`memory`, `tools.calc`).")
    service: str = Field(description="The worker service that runs its syscalls.")
    lanes: list[BackendEntry] = Field(min_length=1, description="Where it runs and how many at once.")
    replica: str | None = Field(None, description="The worker replica that serves it.")
    ts: float | None = Field(None, description="Unix time the replica last confirmed it.")
    requires_approval: bool = Field(
        False, description="Each call waits for an operator's approval (e.g. an irreversible tool)."
    )


def resource_key(resource: str, replica: str | None = None) -> str:
    """KV key of a resource's entry (one per serving replica)."""
    key = "res." + _KEY_UNSAFE.sub("_", resource)
    return key if replica is None else key + "=" + _KEY_UNSAFE.sub("_", replica)
