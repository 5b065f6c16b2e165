"""Agent tokens, stored hashed in the home's `tokens.json` (written by `aios up`).

A stop-gap for authentication until the access-control service owns identities: the scheduler
checks that a syscall's token is known and that its agent name is one the token may act as.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from aios_schemas import AiosError


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Who holds the token.")
    sha256: str = Field(description="Hex SHA-256 of the token.")
    agents: list[str] = Field(description="Agent name patterns (fnmatch) this token may act as.")


class TokenFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tokens: list[TokenEntry] = Field(default_factory=list)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "aios_" + secrets.token_urlsafe(32)


class TokenStore:
    def __init__(self, entries: list[TokenEntry]) -> None:
        self._by_hash = {e.sha256: e for e in entries}

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        return cls(TokenFile.model_validate_json(path.read_text()).tokens)

    @staticmethod
    def write(path: Path, entries: list[TokenEntry]) -> None:
        path.write_text(json.dumps(TokenFile(tokens=entries).model_dump(), indent=2))
        path.chmod(0o600)

    def authenticate(self, token: str, agent: str) -> TokenEntry:
        """The token's entry if it may act as `agent`; AiosError otherwise."""
        digest = hash_token(token)
        entry = self._by_hash.get(digest)
        if entry is None or not hmac.compare_digest(entry.sha256, digest):
            raise AiosError("unauthenticated", "unknown agent token")
        if not any(fnmatch.fnmatchcase(agent, p) for p in entry.agents):
            raise AiosError("forbidden", f"token {entry.name!r} may not act as agent {agent!r}")
        return entry
