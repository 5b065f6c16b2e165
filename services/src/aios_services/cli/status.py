"""`aios status`: every process of a home, alive or not, healthy or not."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from aios_schemas import Namespace

from .home import Home, ProcessInfo, pid_alive
from .procs import http_probe, service_probe


class ProcessStatus(ProcessInfo):
    alive: bool = Field(description="The pid exists.")
    healthy: bool = Field(description="The process answered its health probe.")


class StackStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    home: str
    running: bool = Field(description="A supervisor is running for this home.")
    status: str = Field(description="starting | ready | stopping | failed | stopped")
    supervisor_pid: int | None = None
    nats_url: str | None = None
    processes: list[ProcessStatus] = Field(default_factory=list)


async def collect(home: Home, namespace: str = "") -> StackStatus:
    state = home.read_state()
    if state is None or not pid_alive(state.supervisor_pid):
        return StackStatus(home=str(home.root), running=False, status="stopped")
    ns = Namespace(namespace)

    async def one(p: ProcessInfo) -> ProcessStatus:
        alive = pid_alive(p.pid)
        healthy = False
        if alive:
            if p.kind == "service":
                healthy = await service_probe(state.nats_url, ns, p.name)()
            elif p.name == "nats":
                healthy = await nats_probe(state.nats_url)
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


async def nats_probe(nats_url: str) -> bool:
    """The server accepts a client and answers a ping."""
    import nats

    try:
        nc = await nats.connect(nats_url, connect_timeout=1, allow_reconnect=False)
    except (OSError, nats.errors.Error):
        return False
    try:
        await nc.flush(timeout=1)
        return True
    except nats.errors.Error:
        return False
    finally:
        await nc.close()
