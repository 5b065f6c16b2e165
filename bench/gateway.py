"""The gateway's added latency: the same chat call made directly to the engine, through the gateway
with the `openai` client, and through the SDK, against one `aios up` stack and a zero-latency
engine SIMULATOR (separate process): sequential (interleaved) and open-loop at a fixed rate.

Run: `.venv/bin/python -m bench.gateway --n 300 --rate 200`
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from openai import AsyncOpenAI

from aios_sdk import AIOS
from bench.kernel_overhead import pct
from bench.many_agents import MODEL, engine, kernel
from bench.rate_sweep import open_loop

PROMPT = [{"role": "user", "content": "ping [sim:tokens=8]"}]
Call = Callable[[], Awaitable[object]]


async def sequential(calls: dict[str, Call], n: int) -> dict[str, list[float]]:
    for _ in range(20):
        for call in calls.values():
            await call()
    out: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(n):
        for name, call in calls.items():
            t = time.perf_counter()
            await call()
            out[name].append((time.perf_counter() - t) * 1000)
    return out


def table(title: str, res: dict[str, list[float]]) -> None:
    print(title)
    print(f"{'path':<8} {'p50 ms':>8} {'p99 ms':>8}   added p50 / p99 vs direct")
    d50, d99 = statistics.median(res["direct"]), pct(res["direct"], 99)
    for name, xs in res.items():
        p50, p99 = statistics.median(xs), pct(xs, 99)
        added = "" if name == "direct" else f"{p50 - d50:+.2f} / {p99 - d99:+.2f}"
        print(f"{name:<8} {p50:8.2f} {p99:8.2f}   {added}")


async def measure(n: int, rate: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        async with (
            engine(slots=256, decode_ms=0.0, prefill_ms=0.0) as sim_url,
            kernel(Path(d), sim_url, 256, "las", 0) as home,
            AIOS.connect(home=home) as aios,
        ):
            gateway_url = aios.conn.gateway_url
            assert gateway_url, "no gateway in this stack"
            direct = AsyncOpenAI(base_url=sim_url, api_key="x", max_retries=0)
            gateway = AsyncOpenAI(
                base_url=gateway_url, api_key=f"{aios.agent}:{aios.conn.token}", max_retries=0
            )

            async def via_direct() -> None:
                await direct.chat.completions.create(model=MODEL, messages=PROMPT)  # type: ignore[arg-type]

            async def via_gateway() -> None:
                await gateway.chat.completions.create(model=MODEL, messages=PROMPT)  # type: ignore[arg-type]

            async def via_sdk() -> None:
                await aios.llm.chat(MODEL, PROMPT)

            calls = {"direct": via_direct, "gateway": via_gateway, "sdk": via_sdk}
            table(f"sequential, n={n} each, interleaved", await sequential(calls, n))
            at_rate = {name: (await open_loop(call, rate, seconds))[0] for name, call in calls.items()}
            table(f"open loop at {rate:.0f} calls/s for {seconds:.0f} s each", at_rate)
            await direct.close()
            await gateway.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args(argv)
    print("gateway overhead through `aios up`, SIMULATOR engine with zero model time (separate process)")
    asyncio.run(measure(args.n, args.rate, args.seconds))


if __name__ == "__main__":
    main()
