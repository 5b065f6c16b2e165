"""nats-server restarted under load: accepted syscalls survive (JetStream file storage), services and
agents reconnect, every caller still gets its answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
