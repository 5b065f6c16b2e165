"""Many agents sharing one model through the kernel: each agent is its own program for the
scheduler (fair shares under `las`), and their calls queue in the kernel, not at the engine.

    .venv/bin/aios up --detach
    .venv/bin/python examples/many_agents.py --agents 20
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aios_sdk import AIOS

MODEL = "sim-llama-8b"


async def agent(aios: AIOS, name: str, steps: int) -> int:
    """A small agent: it thinks in a few steps, each one LLM call that builds on the last."""
    history = [{"role": "user", "content": f"{name}: plan a trip, step by step"}]
    tokens = 0
    for _ in range(steps):
        reply = await aios.llm.chat(MODEL, history, max_tokens=32, session=name)
        tokens += reply.usage.total_tokens
        history += [
            {"role": "assistant", "content": reply.content or ""},
            {"role": "user", "content": "next"},
        ]
    return tokens


async def main(agents: int, steps: int) -> None:
    async with AIOS.connect() as aios:
        started = time.perf_counter()
        totals = await asyncio.gather(*(agent(aios, f"agent-{i}", steps) for i in range(agents)))
        took = time.perf_counter() - started
    print(f"{agents} agents x {steps} steps: {agents * steps} calls in {took:.2f}s, {sum(totals)} tokens")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    asyncio.run(main(args.agents, args.steps))
