"""Soak: a bounded mixed load on a real `aios up` stack for a fixed time (10 minutes by default), and
whether the kernel's processes hold up under it: each one's RSS and open file descriptors after the
warm-up, every `--sample-s` seconds, and at the end; the calls made, errors by code, the error rate,
and p50/p99 latency per kind of call.

A fixed number of agents (each its own identity and bus connection), each looping over chat (the
engine simulator with zero modelled time, in its own process, so only the kernel is exercised),
memory.add, memory.search, files.write, files.read and tools.call (`calc`), all paced by one shared
rate (~50 calls/s in all by default); loopback only. A call's failure is counted by its error code
(a typed `AiosError`) or its exception class, never retried.

Exits 1 if the error rate exceeds `--max-error-rate` or a kernel process died (gone, or restarted by
the supervisor: its pid or restart count changed). Writes bench/results/soak.json (or `--out`).

Run: `make soak` (= `.venv/bin/python -m bench.soak --minutes 10`); `--minutes 0.3` is a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from aios_schemas import AiosError
from aios_sdk import AIOS
from aios_services.cli.home import Home, State
from bench.kernel_overhead import pct
from bench.stack import aios_stack, sim_process

RESULTS = Path(__file__).parent / "results"
MODEL = "sim-llama-8b"
PROMPT = [{"role": "user", "content": "soak [sim:tokens=8]"}]
# The kernel's processes as state.json names them (not the simulator, which this benchmark runs).
KERNEL = ("nats", "s3", "scheduler", "llm", "memory", "storage", "tools", "gateway", "recorder", "access")
KINDS = ("llm.chat", "memory.add", "memory.search", "files.write", "files.read", "tools.call")
CALL_TIMEOUT_S = 30.0
TOPICS = ("cats", "taxes", "travel", "cooking", "music", "gardening", "finance", "health")
FILES_PER_AGENT = 16  # paths rewritten in turn: a bounded tree that keeps gaining versions


def proc_sample(pid: int) -> dict[str, float | int | bool]:
    """One process's resident set (MB) and open file descriptors, from /proc (Linux)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return {"pid": pid, "alive": False, "rss_mb": 0.0, "fds": 0}
    rss = next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")), 0.0)
    return {"pid": pid, "alive": True, "rss_mb": round(rss, 1), "fds": fds}


def snapshot(pids: dict[str, int], t0: float) -> dict[str, object]:
    return {
        "t_s": round(time.monotonic() - t0, 1),
        "processes": {name: proc_sample(pid) for name, pid in pids.items()},
    }


def kernel_pids(state: State) -> dict[str, tuple[int, int]]:
    """Each kernel process's (pid, restarts) from state.json."""
    return {p.name: (p.pid, p.restarts) for p in state.processes if p.name in KERNEL and p.pid}


class Pacer:
    """One shared rate for every agent: each call takes the next free slot (1/rate apart)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self.next)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class Tally:
    """Latencies (ms) of the calls that succeeded and error counts, per kind."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {k: [] for k in KINDS}
        self.errors: dict[str, Counter[str]] = {k: Counter() for k in KINDS}

    async def run(self, kind: str, call: Callable[[], Awaitable[object]]) -> None:
        t = time.perf_counter()
        try:
            await asyncio.wait_for(call(), CALL_TIMEOUT_S)
        except AiosError as exc:
            self.errors[kind][exc.code] += 1
        except Exception as exc:  # counted by its class: a soak reports failures, it does not stop
            self.errors[kind][type(exc).__name__] += 1
        else:
            self.ms[kind].append((time.perf_counter() - t) * 1000)

    def calls(self) -> int:
        return sum(len(v) for v in self.ms.values()) + sum(sum(c.values()) for c in self.errors.values())

    def failed(self) -> int:
        return sum(sum(c.values()) for c in self.errors.values())


def agent_calls(aios: AIOS, i: int) -> list[tuple[str, Callable[[int], Awaitable[object]]]]:
    """The loop of one agent: a call of each kind, `n` the loop's count."""
    return [
        ("llm.chat", lambda n: aios.llm.chat(MODEL, PROMPT, max_tokens=8, timeout=CALL_TIMEOUT_S)),
        (
            "memory.add",
            lambda n: aios.memory.add(
                f"agent {i} note {n} about {TOPICS[n % len(TOPICS)]}, detail {n * 7 % 101}",
                metadata={"topic": TOPICS[n % len(TOPICS)], "n": n},
            ),
        ),
        ("memory.search", lambda n: aios.memory.search(f"what about {TOPICS[n % len(TOPICS)]}", k=5)),
        ("files.write", lambda n: aios.files.write(f"soak/{n % FILES_PER_AGENT}.txt", f"{i}:{n}\n" * 64)),
        ("files.read", lambda n: aios.files.read(f"soak/{n % FILES_PER_AGENT}.txt")),
        ("tools.call", lambda n: aios.tools.call("calc", {"expression": f"{n} * 7 + {i}"})),
    ]


@contextlib.asynccontextmanager
async def stack(d: Path, agents: list[str]) -> AsyncIterator[Path]:
    """The zero-latency simulator and `aios up --no-sim` with one model on it and `agents`."""
    async with sim_process("fixed", models=(MODEL,), decode_ms=0.0, prefill_ms_per_token=0.0) as sim:
        config = (
            f"agents = {json.dumps(agents)}\n"
            f'[models."{MODEL}"]\n[[models."{MODEL}".backends]]\n'
            f'name = "sim-zero"\nbase_url = "{sim}/v1"\nslots = 64\n'
        )
        async with aios_stack(d, config) as home:
            yield home


async def soak(args: argparse.Namespace) -> dict[str, object]:
    names = [f"soak-{i}" for i in range(args.agents)]
    with tempfile.TemporaryDirectory(prefix="aios-soak-") as d:
        async with stack(Path(d), names) as home, contextlib.AsyncExitStack() as clients:
            state = Home(home).read_state()
            assert state is not None
            started = kernel_pids(state)
            pids = {n: pid for n, (pid, _) in started.items()}
            conns = [await clients.enter_async_context(AIOS.connect(home=home, agent=a)) for a in names]
            loops = [agent_calls(aios, i) for i, aios in enumerate(conns)]
            # Warm-up (not counted): every kind once per agent, so connections, the catalogue, the
            # sandbox's workers and the stores are in place before the first sample.
            warm = Tally()

            async def warm_up(lp: list[tuple[str, Callable[[int], Awaitable[object]]]]) -> None:
                for kind, call in lp:
                    await warm.run(kind, functools.partial(call, 0))

            await asyncio.gather(*(warm_up(lp) for lp in loops))
            if warm.failed():
                raise SystemExit(f"warm-up failed: { {k: dict(v) for k, v in warm.errors.items() if v} }")
            t0 = time.monotonic()
            samples = [snapshot(pids, t0)]
            tally, pacer = Tally(), Pacer(args.rate)
            deadline = t0 + args.minutes * 60

            async def agent(lp: list[tuple[str, Callable[[int], Awaitable[object]]]]) -> None:
                n = 1
                while time.monotonic() < deadline:
                    for kind, call in lp:
                        await pacer.wait()
                        if time.monotonic() >= deadline:
                            return
                        await tally.run(kind, functools.partial(call, n))
                    n += 1

            async def sampler() -> None:
                while True:
                    await asyncio.sleep(args.sample_s)
                    samples.append(snapshot(pids, t0))
                    line = samples[-1]
                    print(
                        f"  t={line['t_s']:>6} s  calls {tally.calls():>7}  errors {tally.failed()}",
                        flush=True,
                    )

            sampling = asyncio.create_task(sampler())
            try:
                await asyncio.gather(*(agent(lp) for lp in loops))
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
            took = time.monotonic() - t0
            samples.append(snapshot(pids, t0))
            after = Home(home).read_state()
            ended = kernel_pids(after) if after is not None else {}
    return report(args, tally, took, samples, started, ended)


def _proc(sample: dict[str, object], name: str) -> dict[str, float | int | bool]:
    procs = sample["processes"]
    assert isinstance(procs, dict)
    p = procs[name]
    assert isinstance(p, dict)
    return p


def report(
    args: argparse.Namespace,
    tally: Tally,
    took: float,
    samples: list[dict[str, object]],
    started: dict[str, tuple[int, int]],
    ended: dict[str, tuple[int, int]],
) -> dict[str, object]:
    first, last = samples[0]["processes"], samples[-1]["processes"]
    assert isinstance(first, dict) and isinstance(last, dict)
    died = sorted(
        name
        for name, (pid, restarts) in started.items()
        if not last[name]["alive"] or ended.get(name) != (pid, restarts)
    )
    processes = {
        name: {
            "pid": pid,
            "rss_mb_start": first[name]["rss_mb"],
            "rss_mb_end": last[name]["rss_mb"],
            "rss_mb_delta": round(last[name]["rss_mb"] - first[name]["rss_mb"], 1),
            "fds_start": first[name]["fds"],
            "fds_end": last[name]["fds"],
            "fds_delta": last[name]["fds"] - first[name]["fds"],
            "rss_mb_max": max(_proc(s, name)["rss_mb"] for s in samples),
            "fds_max": max(_proc(s, name)["fds"] for s in samples),
            "alive": last[name]["alive"],
        }
        for name, (pid, _) in started.items()
    }
    calls, failed = tally.calls(), tally.failed()
    kinds = {
        kind: {
            "calls": len(ms) + sum(tally.errors[kind].values()),
            "errors": dict(tally.errors[kind]),
            "p50_ms": round(pct(ms, 50), 2) if ms else None,
            "p99_ms": round(pct(ms, 99), 2) if ms else None,
        }
        for kind, ms in tally.ms.items()
    }
    errors: Counter[str] = Counter()
    for c in tally.errors.values():
        errors.update(c)
    rate = failed / calls if calls else 1.0
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.soak " + " ".join(sys.argv[1:]),
        "minutes": args.minutes,
        "agents": args.agents,
        "target_rate": args.rate,
        "duration_s": round(took, 1),
        "calls": calls,
        "calls_per_s": round(calls / took, 1) if took else 0.0,
        "errors": dict(errors),
        "error_rate": rate,
        "max_error_rate": args.max_error_rate,
        "kinds": kinds,
        "processes": processes,
        "samples": samples,
        "died": died,
        "passed": rate <= args.max_error_rate and not died,
    }


def print_report(r: dict[str, object]) -> None:
    print(
        f"soak: {r['agents']} agents, {r['duration_s']} s, {r['calls']} calls ({r['calls_per_s']}/s), "
        f"errors {r['errors'] or 0}, error rate {r['error_rate']:.5f}"
    )
    kinds = r["kinds"]
    assert isinstance(kinds, dict)
    for kind, k in kinds.items():
        print(
            f"  {kind:<14} {k['calls']:>7} calls  p50 {k['p50_ms']} ms  p99 {k['p99_ms']} ms"
            f"  errors {k['errors']}"
        )
    procs = r["processes"]
    assert isinstance(procs, dict)
    print(f"  {'process':<10} {'RSS MB start':>12} {'end':>8} {'max':>8} {'fds start':>10} {'end':>5}")
    for name, p in procs.items():
        print(
            f"  {name:<10} {p['rss_mb_start']:>12} {p['rss_mb_end']:>8} {p['rss_mb_max']:>8}"
            f" {p['fds_start']:>10} {p['fds_end']:>5}"
        )
    print(f"  died: {r['died'] or 'none'}; {'PASSED' if r['passed'] else 'FAILED'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (after warm-up)")
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--rate", type=float, default=50.0, help="calls per second, all agents together")
    ap.add_argument("--sample-s", type=float, default=60.0, help="seconds between process samples")
    ap.add_argument("--max-error-rate", type=float, default=0.001, help="fail above this error rate")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where soak.json goes")
    args = ap.parse_args(argv)
    result = asyncio.run(soak(args))
    print_report(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'soak.json'}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
