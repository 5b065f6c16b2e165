"""Scheduler settings (env prefix AIOS_)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..runtime import ServiceSettings
from .policies import parse_policy_config

Period = Literal["lifetime", "minute", "hour", "day"]


class Quota(BaseModel):
    """Budget of each agent matching a pattern, over its lifetime or per calendar window (counted
    by the scheduler in KV, shared by its replicas)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    calls: int | None = Field(None, ge=0, description="Syscalls an agent may make in the period.")
    tokens: int | None = Field(
        None, ge=0, description="LLM tokens (prompt + completion) an agent may use in the period."
    )
    per: Period = Field("lifetime", description="lifetime, or a window: minute | hour | day (UTC).")


class SchedulerSettings(ServiceSettings):
    policy: str = Field("las", description="Default policy of every resource: fifo | rr | priority | las.")
    policy_params: dict[str, float] = Field(default_factory=dict, description="Parameters of that policy.")
    resource_policies: dict[str, dict[str, float | str]] = Field(
        default_factory=dict,
        description='Per-resource override, e.g. {"llm.big-model": {"name": "rr", "quantum": 1}}.',
    )
    quotas: dict[str, Quota | list[Quota]] = Field(
        default_factory=dict,
        description="Agent name pattern (fnmatch) -> quota, or several (e.g. per minute and per day);"
        " the first matching pattern wins.",
    )
    default_deadline_s: float = Field(600.0, gt=0, description="Deadline of a syscall that sets none.")
    ack_wait_s: float = Field(
        10.0,
        gt=0,
        description="JetStream ack wait: how long after a scheduler dies what it held is redelivered"
        " (held syscalls are heartbeated every third of it).",
    )
    max_deliver: int = Field(20, ge=1, description="Deliveries before JetStream gives a syscall up.")
    max_inflight: int = Field(20_000, ge=1, description="Accepted, unfinished syscalls held at once.")
    results_ttl_s: float = Field(24 * 3600.0, gt=0, description="How long results stay fetchable.")
    fetch_batch: int = Field(256, ge=1, description="Syscalls pulled from the stream per fetch.")
    breaker_threshold: int = Field(3, ge=1, description="Consecutive failures that open a breaker.")
    breaker_cooldown_s: float = Field(2.0, gt=0, description="First time a failing backend stays out.")
    replica_ttl_s: float = Field(
        6.0, gt=0, description="A scheduler replica not heard from for this long no longer holds slots."
    )
    max_attempts: int = Field(4, ge=1, description="Backends tried for one call before its error stands.")
    rate_window_s: float = Field(
        60.0,
        gt=0,
        description="The minute of backends' rpm/tpm limits, in seconds: 60, except against an engine"
        " simulator whose time is scaled (`time_scale` s: 60 * s), as the benchmarks run it.",
    )
    cancel_grace_s: float = Field(
        0.5,
        gt=0,
        description="With replicas: how long one not holding a cancelled syscall waits for its peers to say"
        " whether one of them holds it.",
    )
    stats_gather_s: float = Field(0.5, gt=0, description="How long stats wait for the other replicas' views.")
    catalog_ttl_s: float = Field(
        20.0,
        gt=0,
        description="A worker replica's catalogue entry not re-confirmed for this long is dropped.",
    )

    @model_validator(mode="after")
    def _policies_exist(self) -> SchedulerSettings:
        """An unknown policy or parameter fails the service's start (naming it), not every call."""
        _check_policy("policy / policy_params", self.policy, dict(self.policy_params))
        for resource, override in self.resource_policies.items():
            params: dict[str, object] = dict(override)
            _check_policy(f"resource_policies[{resource!r}]", str(params.pop("name", self.policy)), params)
        return self


def _check_policy(where: str, name: str, params: dict[str, object]) -> None:
    try:
        parse_policy_config(name, **params)
    except ValidationError as exc:
        why = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'name'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{where}: policy {name!r}: {why}") from exc
