"""nats-server restarted under load: accepted syscalls survive (JetStream file storage), services and
agents reconnect, every caller still gets its answer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aios_sdk import DeadlineExceeded
from aios_services.cli.procs import free_port
from aios_services.sim.runner import run_sim
from tests.kernel import running_kernel
from tests.servers import AUTH, BusAuth, nats_server, running

MODEL = "sim-llama-8b"


async def test_nats_restart_mid_load_loses_no_syscall(tmp_path: Path) -> None:
    port = free_port()
    root = tmp_path / "nats"
    auth = BusAuth(tmp_path / "nats.conf")
    url = auth.admin_url(f"nats://127.0.0.1:{port}")
    AUTH[url] = auth
    # The server helpers are synchronous (they probe with asyncio.run): drive them from a thread.
    first = running(nats_server(root, port, auth), tmp_path / "nats1.log")
    await asyncio.to_thread(first.__enter__)
    second = None
    try:
        async with run_sim("fixed", models=(MODEL,), decode_ms=5.0) as sim:
            backends = [{"name": "sim", "base_url": sim.base_url, "slots": 4}]
            async with (
                running_kernel(url, tmp_path, {MODEL: backends}, policy="fifo") as k,
                k.connect() as aios,
            ):
                calls = [
                    asyncio.create_task(
                        aios.llm.chat(
                            MODEL, [{"role": "user", "content": f"job {i} [sim:tokens=40]"}], timeout=60
                        )
                    )
                    for i in range(24)
                ]
                for done, fut in enumerate(asyncio.as_completed(calls), 1):  # some done, others in flight
                    await fut
                    if done == 6:
                        break
                await asyncio.to_thread(first.__exit__, None, None, None)  # the bus goes away...
                await asyncio.sleep(5.0)  # an outage of 5 s (the scenario, not a synchronisation)
                second = running(nats_server(root, port, auth), tmp_path / "nats2.log")
                await asyncio.to_thread(second.__enter__)  # ...and comes back: same port, same store
                replies = await asyncio.wait_for(asyncio.gather(*calls), 90)
                assert len(replies) == 24 and all(r.content for r in replies)
    finally:
        await asyncio.to_thread((second or first).__exit__, None, None, None)


async def test_a_deadline_is_kept_while_the_bus_is_down(tmp_path: Path) -> None:
    """The caller hears DeadlineExceeded on time even when nobody can answer it (the bus is away)."""
    port = free_port()
    auth = BusAuth(tmp_path / "nats.conf")
    url = auth.admin_url(f"nats://127.0.0.1:{port}")
    AUTH[url] = auth
    server = running(nats_server(tmp_path / "nats", port, auth), tmp_path / "nats.log")
    await asyncio.to_thread(server.__enter__)
    stopped = False
    try:
        async with run_sim("fixed", models=(MODEL,), decode_ms=50.0) as sim:
            backends = [{"name": "sim", "base_url": sim.base_url, "slots": 4}]
            async with running_kernel(url, tmp_path, {MODEL: backends}) as k, k.connect() as aios:
                long = [{"role": "user", "content": "long [sim:tokens=1000]"}]
                call = asyncio.create_task(aios.llm.chat(MODEL, long, timeout=2.0))
                await asyncio.sleep(0.3)  # the call is accepted and running (the scenario's timing)
                await asyncio.to_thread(server.__exit__, None, None, None)
                stopped = True
                t0 = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    await call
                # deadline (2 s from the call) + the SDK's grace (2 s), with a margin for a slow CI
                assert time.monotonic() - t0 < 2.0 + 2.0 + 2.5
    finally:
        if not stopped:
            await asyncio.to_thread(server.__exit__, None, None, None)
