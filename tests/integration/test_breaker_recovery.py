"""The only backend of a model dies with calls in flight and is back 0.2 s later: the breaker
counts that as one failure event, so the backend is probed and used again after one cooldown
(2 s by default), not after a cooldown doubled for every call that was in flight."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats

from aios_schemas import SyscallEvent
from aios_services.cli.procs import free_port
from aios_services.sim.runner import build_profile, serve
from tests.kernel import running_kernel

MODEL = "sim-llama-8b"
IN_FLIGHT = 8


def ask(text: str, tokens: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text} [sim:tokens={tokens}]"}]


async def test_a_backend_back_after_0_2_s_is_used_again_after_one_cooldown(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    port = free_port()
    profile = build_profile("fixed", models=(MODEL,), decode_ms=5.0)
    dispatched = asyncio.Event()
    running = 0

    async def on_event(msg: nats.aio.msg.Msg) -> None:
        nonlocal running
        if SyscallEvent.model_validate_json(msg.data).state == "dispatched":
            running += 1
            if running >= IN_FLIGHT:
                dispatched.set()

    backends = [{"name": "sim", "base_url": f"http://127.0.0.1:{port}/v1", "slots": IN_FLIGHT}]
    first = serve(profile, port=port)
    await first.__aenter__()
    async with running_kernel(nats_url, tmp_path, {MODEL: backends}, policy="fifo") as k:
        await nc.subscribe(k.ns.event("dispatched"), cb=on_event)
        async with k.connect() as aios:
            long_calls = [
                asyncio.create_task(aios.llm.chat(MODEL, ask(f"long {i}", 4000), timeout=60))
                for i in range(IN_FLIGHT)
            ]
            await asyncio.wait_for(dispatched.wait(), 20)
            await first.__aexit__(None, None, None)  # dies: every call in flight fails at once
            await asyncio.sleep(0.2)  # down for 0.2 s (the outage itself, not a wait for a result)
            async with serve(profile, port=port):
                back = time.monotonic()
                reply = await aios.llm.chat(MODEL, ask("after", 5), timeout=20)
                recovered_s = time.monotonic() - back
            results = await asyncio.gather(*long_calls, return_exceptions=True)
    assert reply.backend == "sim" and reply.content
    assert all(isinstance(r, Exception) for r in results)  # they were running when it died
    print(f"backend back 0.2 s after dying; used again {recovered_s:.2f} s after it was back")
