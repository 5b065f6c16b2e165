"""The bus's users, at run time: the nats-server config is the static users `aios up` wrote plus the
agents this service added and has not revoked. A change rewrites the config and signals nats-server
(SIGHUP: reload). On reload the server drops the connections of users that are gone, so a revoked
agent is off the bus at once, and refused when it reconnects.

A reload is asynchronous: each config also holds a probe user (no permissions, a fresh name and
password per version); once it can log in, the server runs that version, and the change is done.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import nats

from aios_schemas import AiosError

from ..runtime.natsauth import NatsUser, hash_password, merged_users, render_users, without_credentials


def write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def read_users(path: Path | None) -> list[NatsUser]:
    if path is None or not path.exists():
        return []
    users = json.loads(path.read_text())
    if not isinstance(users, list):
        raise ValueError(f"{path}: not a list of users")
    return [u for u in users if isinstance(u, dict)]


@dataclass
class BusUsers:
    nats_url: str
    config: Path
    static: Path
    agents: Path
    pid_file: Path
    timeout_s: float = 10.0

    def static_names(self) -> set[str]:
        return {str(u["user"]) for u in read_users(self.static)}

    async def apply(self, dynamic: list[NatsUser]) -> None:
        """Make `dynamic` the agents the bus knows besides the static users, and wait for it."""
        probe_user, probe_pw = "probe-" + secrets.token_hex(6), secrets.token_urlsafe(18)
        probe: NatsUser = {
            "user": probe_user,
            "password": hash_password(probe_pw),
            "permissions": {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}},
        }
        write_private(self.agents, json.dumps(dynamic, indent=2))
        users = merged_users(read_users(self.static), [*dynamic, probe])
        write_private(self.config, render_users(users))
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise AiosError("internal", f"cannot signal nats-server to reload its users: {exc}") from exc
        await self._until_loaded(probe_user, probe_pw)

    async def _until_loaded(self, user: str, password: str) -> None:
        servers = without_credentials(self.nats_url).split(",")
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                nc = await nats.connect(
                    servers=servers,
                    user=user,
                    password=password,
                    allow_reconnect=False,
                    connect_timeout=1,
                    max_reconnect_attempts=0,
                )
            except Exception:  # refused: the server still runs the previous version
                if time.monotonic() > deadline:
                    raise AiosError("internal", "nats-server did not reload its users in time") from None
                await asyncio.sleep(0.02)
                continue
            await nc.close()
            return
