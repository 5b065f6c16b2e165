"""SIGKILL the scheduler under load: no accepted syscall is lost, none that completed is re-run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats

from aios_schemas import SyscallEvent, new_id
from aios_services.cli.procs import service_probe
from aios_services.sim.runner import run_sim
from tests.kernel import Kernel, running_kernel

MODEL = "sim-llama-8b"
N = 500


def start_scheduler(k: Kernel, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AIOS_NATS_URL": k.nats_url,
        "AIOS_NAMESPACE": k.ns.name,
        "AIOS_POLICY": "fifo",
        "AIOS_ACK_WAIT_S": "1.5",  # redelivery of what the dead scheduler held comes after this
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aios_services.scheduler"], env=env, stdout=out, stderr=out
        )


async def wait_healthy(k: Kernel) -> None:
    probe = service_probe(k.nats_url, k.ns, "scheduler")
    while not await probe():  # noqa: ASYNC110 (polling the health endpoint under wait_for)
        await asyncio.sleep(0.05)


async def test_sigkill_under_load_loses_nothing_and_reruns_nothing_completed(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    events: list[SyscallEvent] = []
    done = asyncio.Event()

    async def on_event(msg: nats.aio.msg.Msg) -> None:
        events.append(SyscallEvent.model_validate_json(msg.data))
        if sum(e.state == "done" for e in events) >= N // 5:
            done.set()

    async with run_sim("fixed", models=(MODEL,), decode_ms=4.0) as sim:
        backends = [{"name": "sim", "base_url": sim.base_url, "slots": 25}]
        async with running_kernel(nats_url, tmp_path, {MODEL: backends}, services=("llm",)) as k:
            await nc.subscribe(k.ns.event("*"), cb=on_event)
            first = start_scheduler(k, tmp_path / "scheduler1.log")
            second: subprocess.Popen[bytes] | None = None
            try:
                await asyncio.wait_for(wait_healthy(k), 30)
                async with k.connect() as aios:
                    ids = [new_id() for _ in range(N)]
                    calls = [
                        asyncio.create_task(
                            aios.llm.chat(
                                MODEL,
                                [{"role": "user", "content": f"job {i} [sim:tokens=30]"}],
                                id=sid,
                                timeout=120,
                            )
                        )
                        for i, sid in enumerate(ids)
                    ]
                    await asyncio.wait_for(done.wait(), 60)
                    first.send_signal(signal.SIGKILL)
                    first.wait()
                    completed_before_kill = {e.id for e in events if e.state == "done"}
                    second = start_scheduler(k, tmp_path / "scheduler2.log")
                    replies = await asyncio.gather(*calls)
                    generations = sim.stats()["requests"]
            finally:
                for p in (first, second):
                    if p is not None and p.poll() is None:
                        p.terminate()
                        p.wait(timeout=15)
    assert len(replies) == N and all(r.content for r in replies)
    # Every caller got the answer to its own prompt.
    assert len({r.content for r in replies}) > N * 0.9
    dispatched: dict[str, int] = {}
    for e in events:
        if e.state == "dispatched":
            dispatched[e.id] = dispatched.get(e.id, 0) + 1
    assert 0 < len(completed_before_kill) < N
    redispatched = sum(1 for n in dispatched.values() if n > 1)
    print(f"completed before kill: {len(completed_before_kill)}, dispatched again after: {redispatched}")
    rerun = [i for i in completed_before_kill if dispatched.get(i, 0) != 1]
    assert not rerun, f"{len(rerun)} completed syscalls were run again"
    assert set(dispatched) == set(ids)
    # What the backend generated before the kill, for calls the dead scheduler held, is not
    # generated again: the llm service answers the redelivered ones with its kept replies.
    assert generations == N, f"{generations - N} generations twice"
