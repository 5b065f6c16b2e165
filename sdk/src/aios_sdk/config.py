"""Where the SDK finds the kernel: arguments, then AIOS_URL/AIOS_TOKEN, then the home's file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from aios_schemas import CONNECTION_FILE, Connection
from aios_schemas.wire import validation_error

from .errors import BackendUnavailable, InvalidRequest


def server_urls(url: str) -> list[str]:
    """The servers of `url`: one NATS URL, or several separated by commas (every node of a cluster;
    a client fails over among them). nats-py takes a list, never a comma-separated string."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ValueError(f"no NATS server URL in {url!r}")
    return urls


def without_credentials(url: str) -> str:
    """`url` (comma-separated servers) with any `user:password@` removed: to show it, or to connect
    as the agent rather than as whoever the URL names."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        out.append(urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])))
    return ",".join(out)


def default_home() -> Path:
    return Path(os.environ.get("AIOS_HOME") or Path.cwd() / ".aios")


@dataclass(frozen=True)
class Located:
    """A connection and where its parts came from, for error messages that say what to fix."""

    conn: Connection
    url_from: str  # "the url= argument", "$AIOS_URL" or the connection file's path
    file: Path  # the home's connection file, read when it exists
    file_found: bool
    home_from: str  # "the home= argument", "$AIOS_HOME" or "the current directory"

    def unreachable_hint(self) -> str:
        """What to do when the bus at `conn.nats_url` does not answer."""
        if self.file_found:
            up = (
                "`aios up`"
                if self.home_from == "the current directory"
                else f"`aios up --home {self.file.parent}`"
            )
            if self.url_from == str(self.file):
                return f"is the stack of {self.file.parent} running? Start it with {up} (`aios status` tells)"
            return f"check {self.url_from}, or leave it out to use the stack of {self.file.parent}"
        return (
            f"no stack home was found ({self.file} does not exist): start a stack here with `aios up`, "
            "or set AIOS_HOME to the home of a running stack"
        )


def _read(path: Path) -> Connection:
    try:
        return Connection.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise InvalidRequest(f"cannot read the connection file {path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        # A file that is there but does not parse will not fix itself by retrying: invalid_request.
        err = validation_error(exc, f"connection file {path}")
        raise InvalidRequest(
            f"{err.message} (rewrite it with `aios up`, or set AIOS_URL and AIOS_TOKEN)",
            details={"path": str(path), **err.details},
        ) from exc


def locate(
    *,
    home: str | os.PathLike[str] | None = None,
    url: str | None = None,
    token: str | None = None,
    agent: str | None = None,
    namespace: str | None = None,
) -> Located:
    """Resolve the connection and remember where each part came from."""
    url_from = "the url= argument" if url else "$AIOS_URL"
    url = url or os.environ.get("AIOS_URL")
    token = token or os.environ.get("AIOS_TOKEN")
    agent = agent or os.environ.get("AIOS_AGENT")
    namespace = namespace if namespace is not None else os.environ.get("AIOS_NAMESPACE")
    if home:
        root, home_from = Path(home), "the home= argument"
    elif os.environ.get("AIOS_HOME"):
        root, home_from = default_home(), "$AIOS_HOME"
    else:
        root, home_from = default_home(), "the current directory"
    path = root / CONNECTION_FILE
    base = _read(path) if path.exists() else None
    if base is None and not url:
        # Not a bad request: the kernel cannot be found from here (e.g. run from another folder).
        raise BackendUnavailable(
            f"no AIOS kernel found: {path} does not exist ({home_from}) and AIOS_URL is not set: "
            "start a stack with `aios up`, or set AIOS_HOME to the home of a running stack"
        )
    if base is None and not token:
        raise InvalidRequest(f"a token is needed with {url_from} ({url}): pass token= or set AIOS_TOKEN")
    if agent and not token and base is not None:
        # Another agent of this home: its own token, which `aios up` keeps in agents/NAME.token
        # (the home's connection file holds the local agent's).
        own = path.parent / "agents" / f"{agent}.token"
        if own.is_file():
            token = own.read_text().strip() or None
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
        conn = Connection.model_validate({"agent": "local", **fields})
    else:
        conn = base.model_copy(update=fields)
        url_from = url_from if url else str(path)
    return Located(conn, url_from, path, base is not None, home_from)


def resolve_connection(
    *,
    home: str | os.PathLike[str] | None = None,
    url: str | None = None,
    token: str | None = None,
    agent: str | None = None,
    namespace: str | None = None,
) -> Connection:
    """The connection `AIOS.connect()` would use with these arguments."""
    return locate(home=home, url=url, token=token, agent=agent, namespace=namespace).conn
