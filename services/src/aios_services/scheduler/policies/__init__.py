"""Scheduling policies: which waiting syscall of a resource runs next and which running one yields.

`make_policy("las", beta=4)` (or `policy_from_config(config)`) builds one; `PolicyConfig` is the
tagged union of the per-policy configs, for the scheduler's settings. Everything here is pure:
no I/O and no clock (see `base` for the interface and how the scheduler drives it).
"""

from __future__ import annotations

from typing import Annotated, assert_never

from pydantic import Field, TypeAdapter

from .base import Job, Policy, PolicyConfigBase, RunningJob
from .fifo import FifoConfig, FifoPolicy
from .las import LasConfig, LasPolicy
from .priority import PriorityConfig, PriorityPolicy
from .rr import RoundRobinConfig, RoundRobinPolicy

PolicyConfig = Annotated[
    FifoConfig | RoundRobinConfig | PriorityConfig | LasConfig,
    Field(discriminator="name", description="A scheduling policy and its parameters."),
]
"""One policy's configuration, tagged by `name`."""

DEFAULT_POLICY = "las"

_ADAPTER: TypeAdapter[PolicyConfig] = TypeAdapter(PolicyConfig)


def parse_policy_config(name: str, **params: object) -> PolicyConfig:
    """Validate a policy name and its parameters; a `pydantic.ValidationError` names any bad key."""
    return _ADAPTER.validate_python({"name": name, **params})


def policy_from_config(config: PolicyConfig) -> Policy:
    """A fresh policy instance (one per resource) for a validated config."""
    if isinstance(config, FifoConfig):
        return FifoPolicy(config)
    if isinstance(config, RoundRobinConfig):
        return RoundRobinPolicy(config)
    if isinstance(config, PriorityConfig):
        return PriorityPolicy(config)
    if isinstance(config, LasConfig):
        return LasPolicy(config)
    assert_never(config)


def make_policy(name: str = DEFAULT_POLICY, **params: object) -> Policy:
    """Build a policy by name, e.g. `make_policy("rr", quantum=1.0)`.

    Raises `pydantic.ValidationError` (a `ValueError`) for an unknown name, an unknown parameter
    (named in the error) or a value out of range.
    """
    return policy_from_config(parse_policy_config(name, **params))


__all__ = [
    "DEFAULT_POLICY",
    "FifoConfig",
    "FifoPolicy",
    "Job",
    "LasConfig",
    "LasPolicy",
    "Policy",
    "PolicyConfig",
    "PolicyConfigBase",
    "PriorityConfig",
    "PriorityPolicy",
    "RoundRobinConfig",
    "RoundRobinPolicy",
    "RunningJob",
    "make_policy",
    "parse_policy_config",
    "policy_from_config",
]
