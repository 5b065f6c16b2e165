"""Start the simulator on a socket: `run_sim` for in-process tests, `serve` for the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aios_services.sim.api import JSONObject
from aios_services.sim.engine import Engine
from aios_services.sim.profiles import EngineProfile, get_profile
from aios_services.sim.server import SimApp

_SHUTDOWN_S = 2.0


@dataclass
class SimServer:
    """A running simulator: where to reach it, and its engine for white-box checks."""

    host: str
    port: int
    app: SimApp

    @property
    def base_url(self) -> str:
        """OpenAI base URL (ends in /v1)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def engine(self) -> Engine:
        return self.app.engine

    @property
    def profile(self) -> EngineProfile:
        return self.app.profile

    def stats(self) -> JSONObject:
        """The same JSON as GET /sim/stats."""
        return self.app.stats()

    def reset(self) -> None:
        self.app.reset()


def build_profile(profile: str | EngineProfile, **overrides: Any) -> EngineProfile:
    base = get_profile(profile) if isinstance(profile, str) else profile
    return base.with_overrides(**overrides)


@asynccontextmanager
async def serve(profile: EngineProfile, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[SimServer]:
    """Run engine + HTTP server until the context exits."""
    engine = Engine(profile)
    sim_app = SimApp(profile, engine)
    # handler_cancellation: a client that disconnects cancels its handler, which frees the slot now.
    runner = web.AppRunner(
        sim_app.build(), handler_cancellation=True, access_log=None, shutdown_timeout=_SHUTDOWN_S
    )
    await runner.setup()
    engine.start()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        yield SimServer(host=host, port=int(bound), app=sim_app)
    finally:
        # Engine first: it ends every request in flight, so open streams finish instead of holding
        # the HTTP shutdown for its whole timeout.
        await engine.stop()
        await runner.cleanup()


@asynccontextmanager
async def run_sim(profile: str | EngineProfile = "fixed", **overrides: Any) -> AsyncIterator[SimServer]:
    """In-process simulator on 127.0.0.1 and a free port: `async with run_sim("h100-tiny") as sim:`.

    Keyword arguments override profile fields (e.g. time_scale=0.1, max_num_seqs=4, models=("m",)).
    """
    async with serve(build_profile(profile, **overrides)) as sim:
        yield sim
