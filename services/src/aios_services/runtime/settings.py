"""Settings every service shares; each service subclasses this with its own fields (prefix AIOS_)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aios_schemas import Namespace


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIOS_", frozen=True, extra="ignore")

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    namespace: str = Field("", description="Isolates a deployment or a test: prefixes subjects and names.")
    stream_replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="Replicas of every JetStream stream and KV bucket the service creates (3 on a "
        "3-node NATS cluster: a stream keeps its quorum with one node down); an existing one is raised "
        "to it.",
    )
    instance: str = Field(
        default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}",
        description="This process's name among its service's replicas (unique; `aios up` uses the"
        " process name, e.g. memory-2, so a restarted replica takes its own leases back at once).",
    )
    partition_ttl_s: float = Field(
        6.0,
        gt=0,
        description="Leases on data a replica owns (memory and storage partitions, the recorder's and"
        " access service's active replica): a dead replica's move to the others after this long.",
    )
    drain_timeout_s: float = Field(10.0, description="How long a graceful drain may take on SIGTERM.")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="The event loop a service process runs on (uvloop: less CPU per syscall)."
    )

    @property
    def ns(self) -> Namespace:
        return Namespace(self.namespace)
