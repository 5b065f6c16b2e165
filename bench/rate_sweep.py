"""The highest rate at which the kernel's added p99 latency stays under 5 ms (SIMULATOR backend with
zero model time, so only the plumbing is measured).

Open loop: calls start at a fixed rate whatever the answers do (as independent agents would), for
`--seconds` at each rate, direct (the `openai` client straight to the engine) then through the
kernel (`aios up`, every service its own process), same engine process, same run. Added p99 =
kernel p99 - direct p99 at the same rate. Also the kernel processes' CPU per call at each rate.

Run: `.venv/bin/python -m bench.rate_sweep --rates 50 100 200 300 400`
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
from aios_services.cli.home import Home
from bench.kernel_overhead import KERNEL_PROCESSES, cpu_s, idle_rates, pct
from bench.many_agents import MODEL, engine, kernel

PROMPT = [{"role": "user", "content": "ping [sim:tokens=8]"}]
LIMIT_MS = 5.0


async def open_loop(
    call: Callable[[], Awaitable[object]], rate: float, seconds: float
) -> tuple[list[float], int]:
    """Start `rate` calls a second for `seconds`, whatever the answers do: the latency of each that
    succeeded (ms), and how many failed."""
    lat: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        t = time.perf_counter()
        try:
            await call()
        except Exception:
            errors += 1
            return
        lat.append((time.perf_counter() - t) * 1000)

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
    return lat, errors


async def sweep(rates: list[float], seconds: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        async with (
            engine(slots=256, decode_ms=0.0, prefill_ms=0.0) as sim_url,
            kernel(Path(d), sim_url, 256, "las", 0) as home,
        ):
            state = Home(home).read_state()
            assert state is not None
            pids = {p.name: p.pid for p in state.processes if p.name in KERNEL_PROCESSES and p.pid}
            direct = AsyncOpenAI(base_url=sim_url, api_key="x", max_retries=0)
            async with AIOS.connect(home=home) as aios:

                async def via_kernel() -> None:
                    await aios.llm.chat(MODEL, PROMPT, timeout=60)

                async def straight() -> None:
                    await direct.chat.completions.create(model=MODEL, messages=PROMPT)  # type: ignore[arg-type]

                await open_loop(straight, 50, 0.5)
                await open_loop(via_kernel, 50, 0.5)
                idle = await idle_rates(pids)
                head = f"{'rate/s':>7} {'direct p50/p99':>15} {'kernel p50/p99':>15} {'added p99':>10}"
                print(head + "  kernel CPU per call, idle subtracted (ms)")
                best, failed = 0.0, False
                for rate in sorted(rates):
                    dl, _ = await open_loop(straight, rate, seconds)
                    before = {n: cpu_s(p) for n, p in pids.items()}
                    started = time.monotonic()
                    kl, _ = await open_loop(via_kernel, rate, seconds)
                    took = time.monotonic() - started
                    cpu = {
                        n: max(0.0, cpu_s(p) - before[n] - idle[n] * took) * 1000 / len(kl)
                        for n, p in pids.items()
                    }
                    added = pct(kl, 99) - pct(dl, 99)
                    if added < LIMIT_MS and not failed:
                        best = rate
                    else:  # the first rate over the limit ends the range (a higher one may pass by luck)
                        failed = True
                    print(
                        f"{rate:>7.0f} {statistics.median(dl):7.2f}/{pct(dl, 99):<7.2f} "
                        f"{statistics.median(kl):7.2f}/{pct(kl, 99):<7.2f} {added:>10.2f}  "
                        + ", ".join(f"{n} {v:.2f}" for n, v in cpu.items())
                    )
                print(f"highest rate with added p99 under {LIMIT_MS:.0f} ms: {best:.0f} calls/s")
            await direct.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", type=float, nargs="+", default=[50, 100, 150, 200, 300])
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args(argv)
    print("open-loop rate sweep through `aios up`, SIMULATOR engine with zero model time (separate process)")
    asyncio.run(sweep(args.rates, args.seconds))


if __name__ == "__main__":
    main()
