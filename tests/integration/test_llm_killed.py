"""SIGKILL the llm service while it runs calls: the scheduler notices within seconds (its worker
stops sending the heartbeat of a watched exec) and sends the calls again, to the replica that
replaces it; they are answered long before their deadline instead of holding their slots to it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats

from aios_schemas import SyscallEvent
from aios_services.cli.procs import service_probe
from aios_services.sim.runner import run_sim
from tests.kernel import Kernel, running_kernel

MODEL = "sim-llama-8b"
N = 8


def start_llm(k: Kernel, instance: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AIOS_NATS_URL": k.nats_url,
        "AIOS_NAMESPACE": k.ns.name,
        "AIOS_LLM_CONFIG": str(k.root / "llm.toml"),
        "AIOS_INSTANCE": instance,
    }
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "aios_services.llm"], env=env, stdout=out, stderr=out)


async def wait_healthy(k: Kernel) -> None:
    probe = service_probe(k.nats_url, k.ns, "llm")
    deadline = time.monotonic() + 30
    while not await probe():
        assert time.monotonic() < deadline, "llm did not start"
        await asyncio.sleep(0.05)


async def test_calls_of_a_killed_llm_replica_are_sent_again_within_seconds(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    dispatched: set[str] = set()
    all_running = asyncio.Event()

    async def on_event(msg: nats.aio.msg.Msg) -> None:
        evt = SyscallEvent.model_validate_json(msg.data)
        dispatched.add(evt.id)
        if len(dispatched) >= N:
            all_running.set()

    async with run_sim("fixed", models=(MODEL,), decode_ms=5.0) as sim:
        backends = [{"name": "sim", "base_url": sim.base_url, "slots": N}]
        async with running_kernel(
            nats_url, tmp_path, {MODEL: backends}, services=("scheduler",), policy="fifo"
        ) as k:
            await nc.subscribe(k.ns.event("dispatched"), cb=on_event)
            first = start_llm(k, "llm-a", tmp_path / "llm-a.log")
            second: subprocess.Popen[bytes] | None = None
            try:
                await wait_healthy(k)
                async with k.connect() as aios:
                    ask = [{"role": "user", "content": "long [sim:tokens=1000]"}]  # ~5 s each
                    calls = [asyncio.create_task(aios.llm.chat(MODEL, ask, timeout=90)) for _ in range(N)]
                    await asyncio.wait_for(all_running.wait(), 30)
                    first.send_signal(signal.SIGKILL)  # mid-generation, every slot taken
                    first.wait()
                    killed = time.monotonic()
                    second = start_llm(k, "llm-b", tmp_path / "llm-b.log")  # as the supervisor would
                    # Well before the 90 s deadline the old behaviour would have waited for.
                    replies = await asyncio.wait_for(asyncio.gather(*calls), 45)
                    took = time.monotonic() - killed
            finally:
                for p in (first, second):
                    if p is not None and p.poll() is None:
                        p.terminate()
                        p.wait(timeout=15)
    assert len(replies) == N and all(r.content for r in replies)
    print(f"{N} calls of the killed replica answered {took:.1f} s after the kill (5 s of generation each)")
