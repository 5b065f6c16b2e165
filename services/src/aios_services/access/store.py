"""The identities the access service added (`access.duckdb`, this service's alone): agents with the
hash of their token, their groups, and when they were added and revoked."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from aios_schemas import AgentInfo

from ..runtime.storage import connect_duckdb

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    name VARCHAR PRIMARY KEY,
    token_hash VARCHAR NOT NULL,
    groups VARCHAR[] NOT NULL,
    created DOUBLE NOT NULL,
    revoked DOUBLE
);
"""


class Identities:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = connect_duckdb(path)
        self.db.execute(_SCHEMA)
        self._lock = threading.Lock()  # one connection, used from worker threads one at a time

    def close(self) -> None:
        self.db.close()

    def get(self, name: str) -> AgentInfo | None:
        with self._lock:
            row = self.db.execute(
                "SELECT name, groups, created, revoked FROM agents WHERE name = ?", [name]
            ).fetchone()
        return _info(row) if row else None

    def put(self, name: str, token_hash: str, groups: list[str]) -> AgentInfo:
        now = time.time()
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO agents VALUES (?, ?, ?, ?, NULL)", [name, token_hash, groups, now]
            )
        return AgentInfo(name=name, groups=groups, created=now)

    def set_groups(self, name: str, groups: list[str]) -> None:
        with self._lock:
            self.db.execute("UPDATE agents SET groups = ? WHERE name = ?", [groups, name])

    def revoke(self, name: str) -> AgentInfo | None:
        with self._lock:
            self.db.execute(
                "UPDATE agents SET revoked = ? WHERE name = ? AND revoked IS NULL", [time.time(), name]
            )
        return self.get(name)

    def all(self, revoked: bool) -> list[AgentInfo]:
        q = "SELECT name, groups, created, revoked FROM agents"
        if not revoked:
            q += " WHERE revoked IS NULL"
        with self._lock:
            rows = self.db.execute(q + " ORDER BY name").fetchall()
        return [_info(r) for r in rows]

    def live_hashes(self) -> list[tuple[str, str]]:
        """(name, token hash) of every agent not revoked: the bus's dynamic users."""
        with self._lock:
            rows = self.db.execute("SELECT name, token_hash FROM agents WHERE revoked IS NULL ORDER BY name")
            return [(str(n), str(h)) for n, h in rows.fetchall()]


def _info(row: tuple[object, ...]) -> AgentInfo:
    name, groups, created, revoked = row
    return AgentInfo.model_validate({"name": name, "groups": groups, "created": created, "revoked": revoked})
