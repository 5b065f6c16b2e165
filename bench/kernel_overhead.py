"""Latency of one chat syscall through the kernel vs the same call made directly to the backend.

Both paths hit the same simulator instance in the same run, sequentially, so the difference is
what the kernel adds (SDK -> JetStream -> scheduler -> llm service -> backend -> back).
Run: `make bench` (or `.venv/bin/python -m bench.kernel_overhead --n 200`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from openai import AsyncOpenAI

from aios_sdk import AIOS
from aios_services.sim.runner import run_sim
from tests.kernel import running_kernel
from tests.servers import authed_nats

MODEL = "sim-llama-8b"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def interleave(sim_url: str, aios: AIOS, n: int) -> dict[str, list[float]]:
    """`n` chat calls each way, direct and through the kernel, alternating so drift hits both."""
    direct = AsyncOpenAI(base_url=sim_url, api_key="x", max_retries=0)
    msgs = [{"role": "user", "content": "ping [sim:tokens=8]"}]

    async def one_direct() -> None:
        await direct.chat.completions.create(model=MODEL, messages=msgs)  # type: ignore[arg-type]

    async def one_kernel() -> None:
        await aios.llm.chat(MODEL, msgs)

    for _ in range(20):  # warm up both paths
        await one_direct()
        await one_kernel()
    out: dict[str, list[float]] = {"direct": [], "kernel": []}
    for _ in range(n):
        for name, call in (("direct", one_direct), ("kernel", one_kernel)):
            t = time.perf_counter()
            await call()
            out[name].append((time.perf_counter() - t) * 1000)
    await direct.close()
    return out


async def measure(nats_url: str, root: Path, n: int) -> dict[str, list[float]]:
    # A zero-cost backend: the simulator with no modelled time, so only plumbing is measured.
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.0, prefill_ms_per_token=0.0) as sim:
        models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 64}]}
        async with running_kernel(nats_url, root, models) as kernel, kernel.connect() as aios:
            return await interleave(sim.base_url, aios, n)


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


KERNEL_PROCESSES = ("nats", "scheduler", "llm", "recorder")
IDLE_WINDOW_S = 3.0


def stack_config(sim_url: str) -> str:
    """An `aios.toml` whose one model is the zero-latency simulator the benchmark runs itself."""
    return f'''[models."{MODEL}"]
[[models."{MODEL}".backends]]
name = "sim-zero"
base_url = "{sim_url}"
slots = 64
'''


async def idle_rates(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds per second each process spends with no calls (timers, refreshes, probes):
    subtracted from the per-call figures, which would otherwise depend on the run's length."""
    before = {name: cpu_s(pid) for name, pid in pids.items()}
    await asyncio.sleep(IDLE_WINDOW_S)
    return {name: (cpu_s(pid) - before[name]) / IDLE_WINDOW_S for name, pid in pids.items()}


async def measure_stack(home: Path, sim_url: str, n: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """The same comparison against a real `aios up` stack: every service its own process. Also the
    CPU the kernel's processes spent per kernel call (the direct calls do not touch them), less
    what they spend idle over the same time."""
    from aios_services.cli.home import Home

    state = Home(home).read_state()
    assert state is not None
    pids = {p.name: p.pid for p in state.processes if p.name in KERNEL_PROCESSES and p.pid}
    async with AIOS.connect(home=home) as aios:
        idle = await idle_rates(pids)
        before = {name: cpu_s(pid) for name, pid in pids.items()}
        started = time.monotonic()
        res = await interleave(sim_url, aios, n)
        took = time.monotonic() - started
        after = {name: cpu_s(pid) for name, pid in pids.items()}
    # The 20 warm-up calls of `interleave` are inside the window: n + 20 kernel calls in all.
    return res, {
        name: max(0.0, after[name] - before[name] - idle[name] * took) * 1000 / (n + 20) for name in pids
    }


async def run_stack(d: Path, n: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    import sys

    aios = [sys.executable, "-m", "aios_services.cli.main"]
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.0, prefill_ms_per_token=0.0) as sim:
        config = d / "aios.toml"
        config.write_text(stack_config(sim.base_url))
        up = await asyncio.create_subprocess_exec(
            *aios,
            "up",
            "--detach",
            "--no-sim",
            "--config",
            str(config),
            "--home",
            str(d / "home"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await up.communicate()
        if up.returncode:
            raise SystemExit(f"aios up failed: {err.decode()}")
        try:
            return await measure_stack(d / "home", sim.base_url, n)
        finally:
            down = await asyncio.create_subprocess_exec(
                *aios, "down", "--home", str(d / "home"), stdout=asyncio.subprocess.DEVNULL
            )
            await down.wait()


def report(title: str, res: dict[str, list[float]]) -> None:
    print(title)
    print(f"{'path':<8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, xs in res.items():
        print(f"{name:<8} {statistics.median(xs):8.2f} {pct(xs, 99):8.2f} {statistics.fmean(xs):8.2f}")
    kernel, direct = statistics.median(res["kernel"]), statistics.median(res["direct"])
    print(f"kernel adds {kernel - direct:.2f} ms at p50 ({kernel / direct:.2f}x direct)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d, authed_nats(Path(d) / "nats") as url:
        res = asyncio.run(measure(url, Path(d), args.n))
    report(
        f"chat syscall latency, n={args.n} sequential, in-process services, simulator with zero model time",
        res,
    )
    with tempfile.TemporaryDirectory() as d:
        res, cpu = asyncio.run(run_stack(Path(d), args.n))
    report("same, through `aios up` (each service its own process; simulator with zero model time)", res)
    per = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
    print(f"kernel CPU per call, idle CPU subtracted (ms): {per}; total {sum(cpu.values()):.2f}")


if __name__ == "__main__":
    main()
