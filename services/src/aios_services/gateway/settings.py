"""Gateway settings (environment, prefix `AIOS_`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from ..runtime import ServiceSettings


class GatewaySettings(ServiceSettings):
    gateway_host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    gateway_port: int = Field(8080, ge=0, le=65535, description="Its port (0: any free one).")
    gateway_reuse_port: bool = Field(
        False,
        description="Share the port with the other gateway replicas on this machine (SO_REUSEPORT: the"
        " kernel spreads connections between them; `aios up --replicas N` sets it).",
    )
    gateway_agent_idle_s: float = Field(
        600.0, gt=0, description="An agent's bus connection is closed after this long without requests."
    )
    gateway_max_agents: int = Field(
        10_000, ge=1, description="Agents with an open bus connection at once (the least recent goes)."
    )
    gateway_timeout_s: float = Field(
        600.0, gt=0, description="Deadline of a request's syscall when the client sets none."
    )
    gateway_console_token: SecretStr = Field(
        SecretStr(""), description="The operator's token for the web console at /ui ('': the console is off)."
    )
