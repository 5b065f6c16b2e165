"""Access service settings (environment, prefix `AIOS_`).

- `AIOS_ACCESS_DB`: its DuckDB file of identities (`aios up`: `$AIOS_HOME/access.duckdb`).
- `AIOS_ACCESS_NATS_CONFIG`, `AIOS_ACCESS_NATS_USERS`, `AIOS_ACCESS_NATS_AGENTS`,
  `AIOS_ACCESS_NATS_PID`: the server config it rewrites, the static users `aios up` wrote, the
  agents it added (hashed, for `aios up` to keep across restarts), and nats-server's pid file (it is
  signalled to reload). Unset: agents cannot be added (the bus's users are someone else's).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..runtime import ServiceSettings


class AccessSettings(ServiceSettings):
    access_db: Path = Field(Path(".aios/access.duckdb"), description="DuckDB file of identities.")
    access_nats_config: Path | None = Field(None, description="nats-server config it rewrites.")
    access_nats_users: Path | None = Field(None, description="Static users (JSON) `aios up` wrote.")
    access_nats_agents: Path | None = Field(None, description="Where it writes the agents it added (JSON).")
    access_nats_pid: Path | None = Field(None, description="nats-server's pid file.")
    reload_timeout_s: float = Field(10.0, gt=0, description="How long a reload of the bus's users may take.")
