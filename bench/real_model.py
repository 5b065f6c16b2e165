"""Issue 13 scenario E: a REAL model (SmolLM2-135M via llama.cpp's OpenAI-compatible server, as
`aios up --local-model` serves it, one request at a time) shared by 8 agents of different lengths:
each agent's completion time, direct (every agent calls the server itself with the `openai` client;
the server takes requests in arrival order) vs through the kernel (the SDK, policy `las`).

Agent i makes 1 + i % 4 calls (so 1 to 4), each `max_tokens=24` at temperature 0, its next call
after the previous answer. Rounds alternate direct and kernel. Timings depend on this CPU.

Run: `.venv/bin/python -m bench.real_model [--rounds 2] [--agents 8]`.
Writes bench/results/real_model.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from openai import AsyncOpenAI

from aios_sdk import AIOS
from aios_services.cli.home import Home
from bench.stack import aios_stack

RESULTS = Path(__file__).parent / "results"
MODEL = "smollm2-135m"


def prompt(agent: int, step: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Agent {agent}, step {step}: list three colours."}]


@contextlib.asynccontextmanager
async def local_stack(d: Path, policy: str) -> AsyncIterator[tuple[Path, str]]:
    """`aios up --local-model` (no simulator): the home and the llama.cpp server's /v1 URL."""
    async with aios_stack(d, None, policy=policy, extra=("--local-model",)) as home:
        state = Home(home).read_state()
        assert state is not None
        yield home, next(p.address for p in state.processes if p.name == "local-model" and p.address)


async def run_agents(agents: int, call: Callable[[int, int], Awaitable[object]]) -> list[float]:
    """Every agent's completion time (s) from a common start."""
    start = time.perf_counter()

    async def agent(i: int) -> float:
        for step in range(1 + i % 4):
            await call(i, step)
        return time.perf_counter() - start

    return list(await asyncio.gather(*(agent(i) for i in range(agents))))


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "mean_s": round(statistics.mean(xs), 3),
        "p50_s": round(statistics.median(xs), 3),
        "max_s": round(max(xs), 3),
    }


async def measure(agents: int, rounds: int) -> dict[str, object]:
    out: dict[str, list[list[float]]] = {"direct": [], "kernel las": []}
    with tempfile.TemporaryDirectory() as d:
        async with local_stack(Path(d), "las") as (home, url), AIOS.connect(home=home) as aios:
            direct = AsyncOpenAI(base_url=url, api_key="x", timeout=300)

            async def via_direct(i: int, step: int) -> object:
                return await direct.chat.completions.create(
                    model=MODEL,
                    messages=prompt(i, step),  # type: ignore[arg-type]
                    max_tokens=24,
                    temperature=0,
                )

            async def via_kernel(i: int, step: int) -> object:
                return await aios.llm.chat(
                    MODEL, prompt(i, step), max_tokens=24, temperature=0, session=f"agent-{i}", timeout=300
                )

            await via_direct(0, 0)  # warm the model
            for r in range(rounds):
                for name, call in (("direct", via_direct), ("kernel las", via_kernel)):
                    times = await run_agents(agents, call)
                    out[name].append(times)
                    print(f"round {r + 1} {name:<11} " + json.dumps(summary(times)), flush=True)
            await direct.close()
    result: dict[str, object] = {
        "scenario": "E: a real model (SmolLM2-135M, llama.cpp, CPU)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "python -m bench.real_model " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "agents": agents,
        "modes": {k: {"rounds": v, **summary([x for r in v for x in r])} for k, v in out.items()},
    }
    d_mean = result["modes"]["direct"]["mean_s"]  # type: ignore[index]
    k_mean = result["modes"]["kernel las"]["mean_s"]  # type: ignore[index]
    print(f"mean agent completion: kernel las / direct = {k_mean / d_mean:.2f}")
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    result = asyncio.run(measure(args.agents, args.rounds))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real_model.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'real_model.json'}")


if __name__ == "__main__":
    main()
