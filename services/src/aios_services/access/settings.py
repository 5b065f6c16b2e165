"""Access service settings (environment, prefix `AIOS_`).

- `AIOS_ACCESS_DB`: its DuckDB file of identities (`aios up`: `$AIOS_HOME/access.duckdb`).
- `AIOS_ACCESS_NATS_CONFIG`, `AIOS_ACCESS_NATS_USERS`, `AIOS_ACCESS_NATS_AGENTS`,
  `AIOS_ACCESS_NATS_PID`: the server config it rewrites, the static users `aios up` wrote, the
  agents it added (hashed, for `aios up` to keep across restarts), and nats-server's pid file (it is
  signalled to reload; in a cluster, every node's, comma-separated: each node includes the config).
  Unset: agents cannot be added (the bus's users are someone else's).
- `AIOS_ACCESS_NATS_SERVER_NAME`: the `server_name` line of that config (empty in a cluster, where
  the file holds the users alone and each node's own config names it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from ..runtime import ServiceSettings
from ..runtime.natsauth import NATS_SERVER_NAME


class AccessSettings(ServiceSettings):
    access_db: Path = Field(Path(".aios/access.duckdb"), description="DuckDB file of identities.")
    access_nats_config: Path | None = Field(None, description="nats-server config it rewrites.")
    access_nats_users: Path | None = Field(None, description="Static users (JSON) `aios up` wrote.")
    access_nats_agents: Path | None = Field(None, description="Where it writes the agents it added (JSON).")
    access_nats_pid: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="nats-server's pid file; a cluster's nodes' pid files, comma-separated.",
    )
    access_nats_server_name: str = Field(
        NATS_SERVER_NAME, description="The config's server_name ('' in a cluster: the nodes name themselves)."
    )
    reload_timeout_s: float = Field(10.0, gt=0, description="How long a reload of the bus's users may take.")

    @field_validator("access_nats_pid", mode="before")
    @classmethod
    def _pid_files(cls, value: object) -> object:
        if value is None:
            return []
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        if isinstance(value, Path):
            return [value]
        return value
