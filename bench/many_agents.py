"""Many agents sharing one engine, direct vs through the kernel (SIMULATOR figures).

Every process separate, as `aios up` runs them: the engine simulator (`aios sim`, profile `fixed`:
a fixed cost per engine step, so a call of 8 output tokens takes ~9 steps), the kernel (`aios up
--no-sim`, its one model pointing at that simulator with `slots` = the engine's `max_num_seqs`),
and this process, which runs the agents. Each agent makes `calls` sequential chat calls; all agents
start together. Direct: agents call the engine with one shared `openai` client (the engine queues
FCFS beyond its slots, like vLLM). Kernel: the same agents through the SDK, each agent its own
program (`session`), so the policy schedules programs. Throughput = calls / makespan; the ratio
kernel/direct is the figure (same engine, same run, alternating).

Run: `.venv/bin/python -m bench.many_agents --agents 250 --calls 5 --slots 64`
     `.venv/bin/python -m bench.many_agents --agents 2000 --calls 2 --slots 8 --policy las`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from openai import AsyncOpenAI

from aios_sdk import AIOS
from aios_services.cli.home import Home
from bench.kernel_overhead import KERNEL_PROCESSES, cpu_s
from bench.stack import aios_stack, sim_process

MODEL = "sim-llama-8b"
PROMPT = [{"role": "user", "content": "work on it [sim:tokens=8]"}]


@contextlib.asynccontextmanager
async def engine(slots: int, decode_ms: float, prefill_ms: float | None = None) -> AsyncIterator[str]:
    """The simulator in its own process (profile `fixed`), its OpenAI base URL once it is up."""
    prefill = {} if prefill_ms is None else {"prefill_ms_per_token": prefill_ms}
    async with sim_process(
        "fixed", models=(MODEL,), max_num_seqs=slots, decode_ms=decode_ms, **prefill
    ) as url:
        yield url + "/v1"


@contextlib.asynccontextmanager
async def kernel(d: Path, sim_url: str, slots: int, policy: str, ahead: int) -> AsyncIterator[Path]:
    config = (
        f'[models."{MODEL}"]\n[[models."{MODEL}".backends]]\n'
        f'name = "engine"\nbase_url = "{sim_url}"\nslots = {slots}\nahead = {ahead}\n'
    )
    async with aios_stack(d, config, policy=policy) as home:
        yield home


async def run_direct(sim_url: str, agents: int, calls: int) -> float:
    client = AsyncOpenAI(
        base_url=sim_url,
        api_key="x",
        max_retries=0,
        timeout=600,
        http_client=None,
    )

    async def agent() -> None:
        for _ in range(calls):
            await client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=16)  # type: ignore[arg-type]

    t = time.perf_counter()
    await asyncio.gather(*(agent() for _ in range(agents)))
    took = time.perf_counter() - t
    await client.close()
    return took


async def run_kernel(home: Path, agents: int, calls: int) -> tuple[float, dict[str, float]]:
    """Seconds for every agent's calls, and each kernel process's CPU per call (ms) meanwhile."""
    state = Home(home).read_state()
    assert state is not None
    pids = {p.name: p.pid for p in state.processes if p.name in KERNEL_PROCESSES and p.pid}
    async with AIOS.connect(home=home) as aios:

        async def agent(i: int) -> None:
            for _ in range(calls):
                await aios.llm.chat(MODEL, PROMPT, max_tokens=16, session=f"agent-{i}", timeout=600)

        await aios.llm.chat(MODEL, PROMPT, max_tokens=16)  # warm: the catalogue is known
        before = {n: cpu_s(p) for n, p in pids.items()}
        t = time.perf_counter()
        await asyncio.gather(*(agent(i) for i in range(agents)))
        took = time.perf_counter() - t
        cpu = {n: (cpu_s(p) - before[n]) * 1000 / (agents * calls) for n, p in pids.items()}
        return took, cpu


async def measure(
    agents: int, calls: int, slots: int, policy: str, decode_ms: float, rounds: int, ahead: int
) -> None:
    total = agents * calls
    direct: list[float] = []
    through: list[float] = []
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        async with (
            engine(slots, decode_ms) as sim_url,
            kernel(Path(d), sim_url, slots, policy, ahead) as home,
        ):
            await run_direct(sim_url, min(agents, slots), 1)  # warm the engine and the client
            for _ in range(rounds):
                direct.append(total / await run_direct(sim_url, agents, calls))
                took, cpu = await run_kernel(home, agents, calls)
                through.append(total / took)
    d_med, k_med = statistics.median(direct), statistics.median(through)
    rounds_text = (
        f"direct {', '.join(f'{x:.1f}' for x in direct)}; kernel {', '.join(f'{x:.1f}' for x in through)}"
    )
    print(
        f"{agents:>6} agents x {calls} calls, {slots:>3} slots, ahead {ahead}, {policy:<8} "
        f"direct {d_med:7.1f} calls/s, kernel {k_med:7.1f} calls/s, ratio {k_med / d_med:.3f}"
        f"  (rounds: {rounds_text}); kernel CPU per call (ms): "
        + ", ".join(f"{n} {v:.2f}" for n, v in cpu.items())
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, nargs="+", default=[250])
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--policy", default="las")
    ap.add_argument("--decode-ms", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ahead", type=int, nargs="+", default=[0], help="the backend's `ahead` setting(s)")
    args = ap.parse_args(argv)
    print(
        "many agents on one simulated engine (SIMULATOR figures; sim profile fixed, "
        f"decode {args.decode_ms} ms a step, 8 output tokens a call)"
    )
    for n in args.agents:
        for ahead in args.ahead:
            asyncio.run(measure(n, args.calls, args.slots, args.policy, args.decode_ms, args.rounds, ahead))


if __name__ == "__main__":
    main()
