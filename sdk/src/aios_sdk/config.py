"""Where the SDK finds the kernel: arguments, then AIOS_URL/AIOS_TOKEN, then the home's file."""

from __future__ import annotations

import os
from pathlib import Path

from aios_schemas import CONNECTION_FILE, Connection

from .errors import InvalidRequest


def default_home() -> Path:
    return Path(os.environ.get("AIOS_HOME") or Path.cwd() / ".aios")


def resolve_connection(
    *,
    home: str | os.PathLike[str] | None = None,
    url: str | None = None,
    token: str | None = None,
    agent: str | None = None,
    namespace: str | None = None,
) -> Connection:
    url = url or os.environ.get("AIOS_URL")
    token = token or os.environ.get("AIOS_TOKEN")
    agent = agent or os.environ.get("AIOS_AGENT")
    namespace = namespace if namespace is not None else os.environ.get("AIOS_NAMESPACE")
    base: Connection | None = None
    path = Path(home) / CONNECTION_FILE if home else default_home() / CONNECTION_FILE
    if path.exists():
        base = Connection.model_validate_json(path.read_text())
    if base is None and not (url and token):
        raise InvalidRequest(
            f"no AIOS kernel found: {path} does not exist and AIOS_URL/AIOS_TOKEN are not set "
            "(start one with `aios up`)"
        )
    fields: dict[str, str] = {}
    if url:
        fields["nats_url"] = url
    if token:
        fields["token"] = token
    if agent:
        fields["agent"] = agent
    if namespace is not None:
        fields["namespace"] = namespace
    if base is None:
        return Connection.model_validate({"agent": "local", **fields})
    return base.model_copy(update=fields)
