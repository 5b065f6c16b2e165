"""Scheduler settings (env prefix AIOS_SCHEDULER_ ... falls back to AIOS_ for the shared ones)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..runtime import ServiceSettings


class SchedulerSettings(ServiceSettings):
    tokens_file: Path | None = Field(None, description="Hashed agent tokens (tokens.json in the home).")
    policy: str = Field("fifo", description="Default policy for every resource.")
    default_deadline_s: float = Field(600.0, gt=0, description="Deadline of a syscall that sets none.")
    ack_wait_s: float = Field(30.0, gt=0, description="JetStream ack wait; held syscalls are heartbeated.")
    max_deliver: int = Field(20, ge=1, description="Deliveries before JetStream gives a syscall up.")
    max_inflight: int = Field(20_000, ge=1, description="Accepted, unfinished syscalls held at once.")
    results_ttl_s: float = Field(24 * 3600.0, gt=0, description="How long results stay fetchable.")
    llm_slots: int = Field(
        8, ge=1, description="Capacity of an LLM resource until the llm service publishes its own."
    )
    fetch_batch: int = Field(256, ge=1, description="Syscalls pulled from the stream per fetch.")
