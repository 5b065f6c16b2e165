"""Issue 13 scenario B: scale. 250, 500, 1,000 and 2,000 concurrent agents on one simulated engine
(SIMULATOR figures), each a program of `--calls` chat calls, direct (the `openai` client straight
to the engine) and through the kernel (`aios up`, every service its own process, `las`): makespan,
throughput, and the RSS (peak, sampled) and CPU of every kernel process.

One stack serves every size (started once), so the sizes also show whether the kernel's memory
returns after a run. Targets (issue 13): throughput flat or rising to 2,000 agents; the kernel's
processes together <= 1 GiB RSS.

Run: `.venv/bin/python -m bench.scale [--agents 250 500 1000 2000] [--calls 3]` (`--smoke`: 20, 40).
Writes bench/results/scale.json and scale.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aios_sdk import AIOS
from aios_services.cli.home import Home
from bench.kernel_overhead import cpu_s
from bench.many_agents import MODEL, PROMPT, engine, kernel, run_direct

RESULTS = Path(__file__).parent / "results"
KERNEL = ("nats", "scheduler", "llm", "recorder", "gateway", "memory", "storage", "tools", "access")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """The highest RSS of each process while a run goes (sampled every 0.2 s)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = {n: rss_mb(p) for n, p in pids.items()}

    async def run(self) -> None:
        while True:
            for n, p in self.pids.items():
                self.peak[n] = max(self.peak[n], rss_mb(p))
            await asyncio.sleep(0.2)


async def through_kernel(aios: AIOS, agents: int, calls: int) -> float:
    async def agent(i: int) -> None:
        for _ in range(calls):
            await aios.llm.chat(MODEL, PROMPT, max_tokens=16, session=f"agent-{i}", timeout=900)

    t = time.perf_counter()
    await asyncio.gather(*(agent(i) for i in range(agents)))
    return time.perf_counter() - t


async def measure(sizes: list[int], calls: int, slots: int, decode_ms: float) -> dict[str, object]:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        async with engine(slots, decode_ms) as sim_url, kernel(Path(d), sim_url, slots, "las", 1) as home:
            state = Home(home).read_state()
            assert state is not None
            pids = {p.name: p.pid for p in state.processes if p.name in KERNEL and p.pid}
            async with AIOS.connect(home=home) as aios:
                await aios.llm.chat(MODEL, PROMPT, max_tokens=16)  # warm: the catalogue is known
                await run_direct(sim_url, min(slots, 16), 1)
                for n in sizes:
                    direct_s = await run_direct(sim_url, n, calls)
                    idle = {k: rss_mb(p) for k, p in pids.items()}
                    sampler = Sampler(pids)
                    sampling = asyncio.create_task(sampler.run())
                    before = {k: cpu_s(p) for k, p in pids.items()}
                    kernel_s = await through_kernel(aios, n, calls)
                    cpu = {k: (cpu_s(p) - before[k]) * 1000 / (n * calls) for k, p in pids.items()}
                    sampling.cancel()
                    total = n * calls
                    row = {
                        "agents": n,
                        "calls": total,
                        "direct_makespan_s": round(direct_s, 3),
                        "kernel_makespan_s": round(kernel_s, 3),
                        "direct_calls_per_s": round(total / direct_s, 1),
                        "kernel_calls_per_s": round(total / kernel_s, 1),
                        "ratio": round(direct_s / kernel_s, 3),
                        "rss_before_mb": {k: round(v, 1) for k, v in idle.items()},
                        "rss_peak_mb": {k: round(v, 1) for k, v in sampler.peak.items()},
                        "rss_peak_total_mb": round(sum(sampler.peak.values()), 1),
                        "cpu_ms_per_call": {k: round(v, 3) for k, v in cpu.items()},
                    }
                    rows.append(row)
                    print(
                        f"{n:>5} agents x {calls}: direct {row['direct_calls_per_s']:7.1f} calls/s, kernel "
                        f"{row['kernel_calls_per_s']:7.1f} calls/s ({row['ratio']:.3f}x), makespan "
                        f"{kernel_s:6.2f} s; kernel RSS peak {row['rss_peak_total_mb']:.0f} MB "
                        f"("
                        + ", ".join(f"{k} {v:.0f}" for k, v in sampler.peak.items())
                        + "); CPU ms/call "
                        + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v >= 0.01),
                        flush=True,
                    )
    return {
        "scenario": "B: scale",
        "simulator": f"engine SIMULATOR, profile fixed, {slots} slots, decode {decode_ms} ms a step",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "python -m bench.scale " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": rows,
    }


def plot(result: dict[str, object], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: no plot")
        return
    rows: list[dict[str, float]] = result["rows"]  # type: ignore[assignment]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [r["agents"] for r in rows]
    ax.plot(xs, [r["direct_calls_per_s"] for r in rows], marker="o", label="direct")
    ax.plot(xs, [r["kernel_calls_per_s"] for r in rows], marker="o", label="kernel (las)")
    ax.set_xlabel("concurrent agents")
    ax.set_ylabel("calls/s")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput vs agents (engine SIMULATOR)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, nargs="+", default=[250, 500, 1000, 2000])
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--decode-ms", type=float, default=10.0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.agents, args.calls = [20, 40], 2
    result = asyncio.run(measure(args.agents, args.calls, args.slots, args.decode_ms))
    result["smoke"] = args.smoke
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "scale.png")
    print(f"wrote {args.out / 'scale.json'}")


if __name__ == "__main__":
    main()
