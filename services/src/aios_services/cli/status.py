"""`aios status`: every process of a home, alive or not, healthy or not."""

from __future__ import annotations

import asyncio
from typing import get_args

from pydantic import BaseModel, ConfigDict, Field

from aios_schemas import Namespace
from aios_sdk.config import server_urls, without_credentials

from .home import Home, ProcessInfo, ProcessKind, pid_alive
from .procs import http_probe, is_nats, replica_service, service_probe
from .stack import scan


class ProcessStatus(ProcessInfo):
    alive: bool = Field(description="The pid exists.")
    healthy: bool = Field(description="The process answered its health probe.")


class StackStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    home: str
    running: bool = Field(description="A supervisor is running for this home.")
    status: str = Field(
        description="starting | ready | stopping | failed | stopped; stale: no supervisor but processes "
        "of the stack are left (`aios down` stops them); unknown: state.json cannot be read"
    )
    supervisor_pid: int | None = None
    nats_url: str | None = None
    processes: list[ProcessStatus] = Field(default_factory=list)


def _found(home: Home) -> list[ProcessStatus]:
    """The stack's processes found by their environment (no address, health not probed)."""
    kinds: tuple[ProcessKind, ...] = get_args(ProcessKind)
    return [
        ProcessStatus(name=p.name, kind=k, pid=p.pid, alive=True, healthy=False)
        for p in scan(home)
        for k in kinds
        if p.kind == k
    ]


async def collect(home: Home, namespace: str = "") -> StackStatus:
    supervisor = home.lock_holder()
    state = home.read_state()
    if supervisor is None:
        left = _found(home)
        return StackStatus(
            home=str(home.root), running=False, status="stale" if left else "stopped", processes=left
        )
    if state is None:
        return StackStatus(
            home=str(home.root),
            running=True,
            status="unknown",
            supervisor_pid=supervisor,
            processes=_found(home),
        )
    ns = Namespace(namespace)

    async def one(p: ProcessInfo) -> ProcessStatus:
        alive = pid_alive(p.pid)
        healthy = False
        if alive:
            if p.kind == "service":
                service = replica_service(p.name)
                healthy = await service_probe(home.bus_url(state), ns, service, p.name)()
            elif is_nats(p.name):  # this server itself (a cluster's node), not whichever answers
                healthy = await nats_probe(node_url(home.bus_url(state), p.address))
            elif p.address:
                url = p.address.removesuffix("/v1")
                path = {"s3": "/healthz", "sim": "/health", "local-model": "/v1/models"}.get(p.name, "/")
                healthy = await http_probe(url + path)()
        return ProcessStatus(**p.model_dump(), alive=alive, healthy=healthy)

    procs = await asyncio.gather(*(one(p) for p in state.processes))
    return StackStatus(
        home=str(home.root),
        running=True,
        status=state.status,
        supervisor_pid=state.supervisor_pid,
        nats_url=state.nats_url,
        processes=list(procs),
    )


def node_url(bus_url: str, address: str | None) -> str:
    """The server of `bus_url` (with its credentials) at `address`; `bus_url` if none is."""
    for url in server_urls(bus_url):
        if without_credentials(url) == address:
            return url
    return bus_url


async def nats_probe(nats_url: str) -> bool:
    """The server accepts a client and answers a ping."""
    import nats

    try:
        nc = await nats.connect(server_urls(nats_url), connect_timeout=1, allow_reconnect=False)
    except (OSError, nats.errors.Error):
        return False
    try:
        await nc.flush(timeout=1)
        return True
    except nats.errors.Error:
        return False
    finally:
        await nc.close()
