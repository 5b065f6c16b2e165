"""What the access check costs: the rule evaluation alone (per call, with N rules), and the latency it
adds to a chat syscall through the kernel (with no rules vs with 100 rules, one of which matches
every call, so each call is also audited), in the same run, alternating blocks so drift hits both.
Run: `.venv/bin/python -m bench.access_bench --n 300`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import nats
import nats.js.errors

from aios_schemas import AccessRule, AgentAccess, AiosError, encode
from aios_sdk import AIOS
from aios_services.scheduler.access import AccessTable
from aios_services.sim.runner import run_sim
from bench.kernel_overhead import MODEL, pct
from tests.kernel import running_kernel
from tests.servers import authed_nats

AGENT = "agent-1"


def rules(n: int) -> list[AccessRule]:
    """`n` rules: most for other agents and groups; one (`*`, allow llm.* on llm.sim*) matches."""
    out = [AccessRule(id="all-sim", who="*", action="llm.*", resource="llm.sim*", effect="allow")]
    for i in range(n - 1):
        who = f"group:g{(i // 10) % 100}" if i % 10 == 0 else f"agent:other-{i}"
        out.append(AccessRule(id=f"r{i}", who=who, action="llm.*", resource=f"llm.big-{i}*", effect="deny"))
    return out


def micro(n_rules: int, reps: int = 200_000, cached: bool = True) -> float:
    """ns per check of a call by an agent in 2 groups (`cached`: the same call again, else evaluated
    from the rules each time)."""
    t = AccessTable()
    for r in rules(n_rules) if n_rules else []:
        t.put_rule(r)
    t.agents[AGENT] = AgentAccess(name=AGENT, groups=["g0", "g3"])
    check = t.check if cached else t.evaluate
    s = timeit.timeit(lambda: check(AGENT, "llm.chat", "llm.sim-llama-8b"), number=reps)
    return s / reps * 1e9


async def set_rules(kv_url: str, bucket: str, on: bool, aios: AIOS) -> None:
    nc = await nats.connect(kv_url)
    try:
        kv = await nc.jetstream().key_value(bucket)
        sentinel = AccessRule(id="sentinel", who=f"agent:{AGENT}", action="llm.embed", effect="deny")
        if on:
            await kv.put(f"agent.{AGENT}", encode(AgentAccess(name=AGENT, groups=["g0", "g3"])))
            for r in [*rules(99), sentinel]:
                await kv.put(f"rule.{r.id}", encode(r))
        else:
            with contextlib.suppress(nats.js.errors.NoKeysError):
                for key in await kv.keys():
                    await kv.delete(key)
    finally:
        await nc.close()
    while True:  # until the scheduler's copy shows it (the sentinel denies embeddings)
        try:
            await aios.llm.embed(MODEL, ["x"])
            denied = False
        except AiosError as exc:
            denied = exc.code == "forbidden"
        if denied == on:
            return
        await asyncio.sleep(0.02)


async def measure(nats_url: str, root: Path, n: int, blocks: int) -> dict[str, list[float]]:
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.0, prefill_ms_per_token=0.0) as sim:
        models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 64}]}
        async with running_kernel(nats_url, root, models) as kernel, kernel.connect() as aios:
            msgs = [{"role": "user", "content": "ping [sim:tokens=8]"}]
            for _ in range(20):
                await aios.llm.chat(MODEL, msgs)
            out: dict[str, list[float]] = {"no rules": [], "100 rules": []}
            for b in range(blocks):
                name = "100 rules" if b % 2 else "no rules"
                await set_rules(nats_url, kernel.ns.access_bucket, b % 2 == 1, aios)
                for _ in range(n // blocks):
                    t = time.perf_counter()
                    await aios.llm.chat(MODEL, msgs)
                    out[name].append((time.perf_counter() - t) * 1000)
            return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600, help="calls in all (half each way)")
    ap.add_argument("--blocks", type=int, default=6)
    args = ap.parse_args(argv)
    print("access check alone (agent in 2 of 100 groups; 90% of rules name other agents, 10% groups):")
    for n_rules in (0, 10, 100, 1000, 10_000):
        ev, hit = micro(n_rules, 50_000, cached=False), micro(n_rules)
        print(f"  {n_rules:>6} rules: evaluated {ev:7.0f} ns, cached verdict {hit:5.0f} ns per check")
    with tempfile.TemporaryDirectory() as d, authed_nats(Path(d) / "nats") as url:
        res = asyncio.run(measure(url, Path(d), args.n, args.blocks))
    print(
        f"chat syscall latency through the kernel (in-process services), n={args.n} sequential, alternating:"
    )
    print(f"{'rules':<10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, xs in res.items():
        print(f"{name:<10} {statistics.median(xs):8.2f} {pct(xs, 99):8.2f} {statistics.fmean(xs):8.2f}")
    a, b = res["no rules"], res["100 rules"]
    print(
        f"the check adds {statistics.median(b) - statistics.median(a):+.3f} ms at p50,"
        f" {pct(b, 99) - pct(a, 99):+.3f} ms at p99"
    )


if __name__ == "__main__":
    main()
