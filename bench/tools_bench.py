"""Tools: what a `tools.call` of a trivial tool (`calc`, "1+1") costs through the kernel (SDK ->
JetStream -> scheduler -> tools service -> a sandbox worker process -> back), against the same call
made on the sandbox directly in this process (a warm worker: the isolation's own cost), and what a
worker process costs to start (why the sandbox keeps a pool of reusable workers rather than one
process per call). In-process kernel on a real nats-server with the users `aios up` gives.

Run: `.venv/bin/python -m bench.tools_bench [--n 300]`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from aios_services.tools.sandbox import Pool
from bench.kernel_overhead import pct
from tests.integration.tools_kernel import tools_kernel
from tests.servers import authed_nats

CALC = "aios_services.tools.builtins:calc"


def line(label: str, ms: list[float]) -> str:
    return f"{label:<44} p50 {pct(ms, 50):7.3f} ms  p99 {pct(ms, 99):7.3f} ms  (n={len(ms)})"


async def cold_starts(n: int) -> list[float]:
    """A new worker process per call: start it, run one call, stop it."""
    out = []
    for _ in range(n):
        pool = Pool(spare=0, max_idle=0)
        t = time.perf_counter()
        await pool.run("calc", CALC, {"expression": "1+1"}, timeout_s=10, memory_mb=None)
        out.append((time.perf_counter() - t) * 1000)
        await pool.close()
    return out


async def warm(n: int) -> list[float]:
    pool = Pool(spare=1)
    await pool.run("calc", CALC, {"expression": "1+1"}, timeout_s=10, memory_mb=None)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await pool.run("calc", CALC, {"expression": "1+1"}, timeout_s=10, memory_mb=256)
        out.append((time.perf_counter() - t) * 1000)
    await pool.close()
    return out


async def through_kernel(url: str, root: Path, n: int) -> list[float]:
    async with tools_kernel(url, root) as kernel, kernel.connect() as aios:
        for _ in range(20):  # warm up: connections, the scheduler's queue, the worker
            await aios.tools.call("calc", {"expression": "1+1"})
        out = []
        for _ in range(n):
            t = time.perf_counter()
            await aios.tools.call("calc", {"expression": "1+1"})
            out.append((time.perf_counter() - t) * 1000)
        return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=300)
    n = ap.parse_args(argv).n
    print(line("sandbox, new process per call", asyncio.run(cold_starts(max(10, n // 10)))))
    print(line("sandbox, warm worker (the pool)", asyncio.run(warm(n))))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "k").mkdir()
        with authed_nats(root / "nats") as url:  # starts its server synchronously: outside the loop
            print(
                line("tools.call through the kernel (SDK)", asyncio.run(through_kernel(url, root / "k", n)))
            )


if __name__ == "__main__":
    main()
