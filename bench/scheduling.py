"""Agent completion time under each scheduling policy, with the engine simulator (simulator figures).

50 agents of mixed length share one model served by an engine with 8 slots (max_num_seqs=8, the
same engine for every mode): 40 short agents (3 calls of 16-64 output tokens) and 10 long ones
(3 calls of 256-512 tokens), all arriving at once. The baseline calls the engine directly (it
queues what does not fit, first come first served, like vLLM); each policy runs the same seeded
workload through the kernel (backend slots = 8) on a fresh simulator, profile h100-llama8b at
real speed (time_scale 1).

Run: `.venv/bin/python -m bench.scheduling` (part of `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from openai import AsyncOpenAI

from aios_services.sim.runner import run_sim
from tests.kernel import running_kernel
from tests.servers import authed_nats

MODEL = "sim-llama-8b"
SLOTS = 8


@dataclass(frozen=True)
class Agent:
    name: str
    calls: list[int]  # output tokens of each sequential call


def workload(seed: int) -> list[Agent]:
    rng = random.Random(seed)
    agents = [Agent(f"agent-s{i:02d}", [rng.randint(16, 64) for _ in range(3)]) for i in range(40)]
    agents += [Agent(f"agent-l{i:02d}", [rng.randint(256, 512) for _ in range(3)]) for i in range(10)]
    rng.shuffle(agents)
    return agents


def messages(agent: Agent, step: int, tokens: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{agent.name} step {step}: work [sim:tokens={tokens}]"}]


def summary(times: list[float]) -> tuple[float, float]:
    xs = sorted(times)
    return statistics.fmean(xs), xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]


async def run_direct(agents: list[Agent], **sim_kw: object) -> list[float]:
    async with run_sim("h100-llama8b", **sim_kw) as sim:  # type: ignore[arg-type]
        client = AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=0)
        t0 = time.perf_counter()

        async def one(a: Agent) -> float:
            for step, tokens in enumerate(a.calls):
                await client.chat.completions.create(model=MODEL, messages=messages(a, step, tokens))  # type: ignore[arg-type]
            return time.perf_counter() - t0

        out = await asyncio.gather(*(one(a) for a in agents))
        await client.close()
        return list(out)


async def run_kernel(
    nats_url: str, root: Path, policy: str, agents: list[Agent], **sim_kw: object
) -> list[float]:
    async with run_sim("h100-llama8b", **sim_kw) as sim:  # type: ignore[arg-type]
        caps = {"continue_partial": True, "priority": True}
        models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": SLOTS, "capabilities": caps}]}
        params = {"quantum": 0.5} if policy == "rr" else {}
        async with running_kernel(nats_url, root, models, policy=policy, policy_params=params) as k:
            t0 = time.perf_counter()

            async def one(a: Agent) -> float:
                async with k.connect(agent=a.name) as aios:
                    for step, tokens in enumerate(a.calls):
                        await aios.llm.chat(MODEL, messages(a, step, tokens), session=a.name)
                return time.perf_counter() - t0

            return list(await asyncio.gather(*(one(a) for a in agents)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--time-scale", type=float, default=1.0)
    args = ap.parse_args()
    agents = workload(args.seed)
    sim_kw = {"models": (MODEL,), "time_scale": args.time_scale, "max_num_seqs": SLOTS}
    rows: list[tuple[str, float, float, float]] = []
    names = tuple(a.name for a in agents)
    with tempfile.TemporaryDirectory() as d, authed_nats(Path(d) / "nats", names) as url:
        direct = asyncio.run(run_direct(agents, **sim_kw))
        rows.append(("direct (no kernel, engine queue FCFS)", *summary(direct), max(direct)))
        for i, policy in enumerate(("fifo", "rr", "las")):
            root = Path(d) / f"k{i}"
            root.mkdir()
            times = asyncio.run(run_kernel(url, root, policy, agents, **sim_kw))
            rows.append((f"kernel {policy} ({SLOTS} slots)", *summary(times), max(times)))
    print(
        f"SIMULATOR figures: 50 agents (40 short, 10 long), 3 calls each, seed {args.seed}, "
        f"profile h100-llama8b, time_scale {args.time_scale}"
    )
    print(f"{'mode':<42} {'mean s':>8} {'p99 s':>8} {'makespan s':>11}")
    for name, mean, p99, makespan in rows:
        print(f"{name:<42} {mean:8.2f} {p99:8.2f} {makespan:11.2f}")


if __name__ == "__main__":
    main()
