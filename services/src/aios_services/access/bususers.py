"""The bus's users, at run time: the nats-server config is the static users `aios up` wrote plus the
agents this service added and has not revoked. A change rewrites the config and signals nats-server
(SIGHUP: reload). On reload the server drops the connections of users that are gone, so a revoked
agent is off the bus at once, and refused when it reconnects.

A reload is asynchronous: each config also holds a probe user (no permissions, a fresh name and
password per version); once it can log in, the server runs that version, and the change is done.
In a cluster every node includes the same users file: each node is signalled, and the change is done
when the probe user can log in at each node that is up (a node that is down reads the file when it
starts again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import nats

from aios_schemas import AiosError
from aios_sdk.config import server_urls

from ..runtime.natsauth import (
    NATS_SERVER_NAME,
    NatsUser,
    hash_password,
    merged_users,
    render_users,
    without_credentials,
)


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
    pid_files: list[Path]  # nats-server's; a cluster's nodes'
    server_name: str = NATS_SERVER_NAME  # "" in a cluster: the file holds the users alone
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
        write_private(self.config, render_users(users, self.server_name))
        signalled, errors = 0, []
        for pid_file in self.pid_files:
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
                signalled += 1
            except (OSError, ValueError) as exc:  # a node that is down: it reads the file at start
                errors.append(f"{pid_file.name}: {exc}")
        if not signalled:
            raise AiosError("internal", f"cannot signal nats-server to reload its users: {'; '.join(errors)}")
        deadline = time.monotonic() + self.timeout_s
        servers = server_urls(without_credentials(self.nats_url))
        await asyncio.gather(*(self._until_loaded(s, probe_user, probe_pw, deadline) for s in servers))

    async def _until_loaded(self, server: str, user: str, password: str, deadline: float) -> None:
        """Until `user` can log in at `server`, or it is down (refuses connections)."""
        while True:
            if not await _listening(server):
                return
            try:
                nc = await nats.connect(
                    servers=[server],
                    user=user,
                    password=password,
                    allow_reconnect=False,
                    connect_timeout=1,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.02,
                )
            except Exception:  # refused: the server still runs the previous version
                if time.monotonic() > deadline:
                    raise AiosError(
                        "internal", f"nats-server {server} did not reload its users in time"
                    ) from None
                await asyncio.sleep(0.02)
                continue
            await nc.close()
            return


async def _listening(server: str) -> bool:
    """Whether something accepts TCP connections at `server`'s host and port."""
    parts = urlsplit(server)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222), timeout=1.0
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
