"""Scenario A of the benchmarks: the AIOS paper's experiment, by regime (SIMULATOR figures).

N agent programs (bench/workloads.py: ReAct, Reflexion, Autellix's chat and tool use; default the
mix) start together and share one simulated engine. Each mode runs the same seeded programs on a
fresh engine with the same parameters:
- `direct`: every agent calls the engine itself with the `openai` client and its default retries
  (2, honouring `retry-after-ms`); retries and 429s counted on the client's HTTP transport;
- `fifo`, `rr`, `las`: through the kernel (`aios up`, every service its own process; the SDK, each
  agent its own program (`session`)), the model's policy set per model (`resource_policies`);
- `las-adaptive`: `las` with the backend's `slots` left high and `adaptive = true` (the llm
  service adapts the concurrency to the engine's /metrics); skipped where that setting does not
  exist.

Regimes (BENCH-REFERENCE "How we report"):
- (a) engine not overloaded: profile h100-llama8b as calibrated (KV 444,688 tokens); kernel slots 256.
- (b) direct access overloads the KV cache: h100-llama8b with `kv_tokens` = a quarter of the sum of
  every program's largest context (all agents at once need 4x the budget: direct mode preempts and
  recomputes); kernel slots = kv_tokens / the mean largest context (what fits).
- (c) hosted API with rate limits: profile hosted-api, OpenAI's tier-1 limits (500 RPM, 200k TPM)
  for every 50 agents (10 requests and 4,000 tokens a minute per agent: about half the token rate
  the mix uses unthrottled, so the limit binds); the kernel is told the same limits (backend
  `rpm`/`tpm`) and queues; kernel slots 256.

Time: the simulator runs at `--time-scale` (modelled durations x scale, its rate-limit minute too),
and the kernel's time constants are given in the same modelled time: LAS `base_quantum` and RR
`quantum` 2 s x scale, the rate limits' minute 60 s x scale (`rate_window_s`). Times are reported
in modelled seconds (real / scale): the kernel's own cost is real time, so it weighs 1/scale more
than it would at full speed.

Metrics per mode: throughput (completed agents a minute, calls a second), makespan, agent
completion mean/p50/p99, slowdown (completion / the program's time alone, workloads.ideal_s) and
Jain's index over it, retries and 429s, failed agents, and the engine's preemptions and recomputed
tokens (/sim/stats); ratios against `direct` of the same run.

Run: `.venv/bin/python -m bench.paper` (N=250, every regime and mode, a few minutes on 2 cores)
     `.venv/bin/python -m bench.paper --smoke` (< 30 s; the suite runs it)
Writes bench/results/paper.json and, with matplotlib, bench/results/paper.png (completion CDFs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2  # the openai client's HTTP library (its fork of httpx)
from openai import AsyncOpenAI

from aios_sdk import AIOS
from aios_services.llm.config import BackendConfig
from aios_services.sim.profiles import get_profile
from bench.stack import aios_stack, sim_host, sim_stats
from bench.workloads import WORKLOADS, Program, ideal_s, programs, system_text, user_text

MODES = ("direct", "fifo", "rr", "las", "las-adaptive")
REGIMES = ("a", "b", "c")
HIGH_SLOTS = 256
QUANTUM_S = 2.0  # the LAS and RR defaults, in modelled seconds
RESULTS = Path(__file__).parent / "results"

Message = dict[str, str]
Call = Callable[[Program, list[Message], int], Awaitable[str]]


@dataclass(frozen=True)
class Regime:
    key: str
    title: str
    profile: str
    sim: dict[str, Any]  # profile overrides, the same for every mode
    slots: int  # the kernel backend's slots (fifo, rr, las)
    ahead: int
    rpm: int | None = None
    tpm: int | None = None
    continue_partial: bool = True  # vLLM continues a partial answer; a hosted API does not

    @property
    def sim_model(self) -> str:
        return get_profile(self.profile).models[0]


def regimes(progs: Sequence[Program], time_scale: float) -> dict[str, Regime]:
    """The three regimes for these programs (formulas in the module docstring)."""
    n = len(progs)
    peaks = [p.peak_context for p in progs]
    kv_b = max(sum(peaks) // 4, 2 * max(peaks))
    kv_b = -(-kv_b // 16) * 16
    base = {"time_scale": time_scale}
    return {
        "a": Regime("a", "engine not overloaded", "h100-llama8b", base, HIGH_SLOTS, 4),
        "b": Regime(
            "b",
            f"KV cache overloaded by direct access (kv_tokens {kv_b:,})",
            "h100-llama8b",
            {**base, "kv_tokens": kv_b},
            max(1, int(kv_b / statistics.fmean(peaks))),
            1,
        ),
        "c": Regime(
            "c",
            f"hosted API, {10 * n:,} RPM / {4000 * n:,} TPM",
            "hosted-api",
            {**base, "rpm": 10 * n, "tpm": 4000 * n},
            HIGH_SLOTS,
            0,
            rpm=10 * n,
            tpm=4000 * n,
            continue_partial=False,
        ),
    }


def adaptive_supported() -> bool:
    return "adaptive" in BackendConfig.model_fields


def kernel_model(regime: str, mode: str) -> str:
    return f"paper-{regime}-{mode}"


def stack_config(regs: Sequence[Regime], modes: Sequence[str], urls: Mapping[str, str], ts: float) -> str:
    """The aios.toml: one model per (regime, kernel mode), each on its own fresh engine."""
    lines = ["[scheduler]", f"rate_window_s = {60.0 * ts!r}", "[scheduler.resource_policies]"]
    for r in regs:
        for m in modes:
            policy = "las" if m == "las-adaptive" else m
            param = {"rr": f", quantum = {QUANTUM_S * ts!r}", "las": f", base_quantum = {QUANTUM_S * ts!r}"}
            lines.append(f'"llm.{kernel_model(r.key, m)}" = {{ name = "{policy}"{param.get(policy, "")} }}')
    for r in regs:
        for m in modes:
            name = kernel_model(r.key, m)
            slots = HIGH_SLOTS if m == "las-adaptive" else r.slots
            partial = str(r.continue_partial).lower()
            lines += [
                f'[models."{name}"]',
                f'[[models."{name}".backends]]',
                f'name = "{r.key}-{m}"',
                f'base_url = "{urls[f"{r.key}-{m}"]}/v1"',
                f'model = "{r.sim_model}"',
                f"slots = {slots}",
                f"ahead = {r.ahead}",
                f"capabilities = {{ continue_partial = {partial}, priority = true }}",
            ]
            lines += [f"{k} = {v}" for k, v in (("rpm", r.rpm), ("tpm", r.tpm)) if v is not None]
            if m == "las-adaptive":
                lines.append("adaptive = true")
    return "\n".join(lines) + "\n"


@dataclass
class AgentRun:
    name: str
    shape: str
    calls: int = 0
    end_s: float = 0.0  # real seconds from the start
    error: str | None = None


async def run_agent(p: Program, call: Call, t0: float, scale: float) -> AgentRun:
    out = AgentRun(p.name, p.shape)
    messages: list[Message] = [{"role": "system", "content": system_text(p)}] if p.system_tokens else []
    try:
        for i, step in enumerate(p.steps):
            messages.append({"role": "user", "content": user_text(p, i)})
            messages.append({"role": "assistant", "content": await call(p, messages, step.output_tokens)})
            out.calls += 1
            if step.tool_s:
                await asyncio.sleep(step.tool_s * scale)  # the tool: a local wait
    except Exception as exc:  # the agent program dies of it, as a framework's would: counted
        out.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    out.end_s = time.perf_counter() - t0
    return out


class CountingTransport(httpx2.AsyncBaseTransport):
    """The openai client's HTTP transport, counting every attempt and every 429 it receives."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests = 0
        self.status_429 = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/chat/completions"):
            self.requests += 1
            self.status_429 += response.status_code == 429
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run_direct(
    progs: Sequence[Program], root_url: str, model: str, scale: float
) -> tuple[list[AgentRun], int, int]:
    """Agent runs, HTTP attempts and 429s received: direct access with the openai client's defaults."""
    limits = httpx2.Limits(max_connections=len(progs) + 16, max_keepalive_connections=len(progs) + 16)
    transport = CountingTransport(httpx2.AsyncHTTPTransport(limits=limits))
    async with httpx2.AsyncClient(transport=transport, timeout=3600) as http:
        client = AsyncOpenAI(base_url=root_url + "/v1", api_key="x", http_client=http)

        async def call(p: Program, messages: list[Message], tokens: int) -> str:
            r = await client.chat.completions.create(model=model, messages=messages, max_tokens=tokens)  # type: ignore[arg-type]
            return r.choices[0].message.content or ""

        await call(progs[0], [{"role": "user", "content": "warm up [sim:tokens=1]"}], 1)
        await reset(root_url)
        transport.requests = transport.status_429 = 0
        t0 = time.perf_counter()
        runs = await asyncio.gather(*(run_agent(p, call, t0, scale) for p in progs))
    return list(runs), transport.requests, transport.status_429


async def run_kernel(aios: AIOS, progs: Sequence[Program], model: str, scale: float) -> list[AgentRun]:
    async def call(p: Program, messages: list[Message], tokens: int) -> str:
        reply = await aios.llm.chat(model, messages, max_tokens=tokens, session=p.name, timeout=3600)
        return reply.content or ""

    t0 = time.perf_counter()
    return list(await asyncio.gather(*(run_agent(p, call, t0, scale) for p in progs)))


async def warm_kernel(aios: AIOS, model: str) -> None:
    """One call first: the model is in the scheduler's catalogue before the clock starts."""
    for _ in range(100):
        try:
            await aios.llm.chat(model, [{"role": "user", "content": "warm up [sim:tokens=1]"}], max_tokens=1)
            return
        except Exception:  # not in the catalogue yet (the llm service publishes it at start)
            await asyncio.sleep(0.1)
    raise RuntimeError(f"model {model} never answered through the kernel")


def pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] if s else math.nan


def jain(xs: Sequence[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)) if xs else math.nan


@dataclass
class ModeResult:
    mode: str
    agents: int
    completed: int
    failed: int
    calls: int
    makespan_s: float  # modelled seconds (real / time_scale)
    agents_per_min: float
    calls_per_s: float
    completion_mean_s: float
    completion_p50_s: float
    completion_p99_s: float
    slowdown_mean: float
    jain_slowdown: float
    jain_completion: float
    retries: int
    client_429s: int
    engine_429s: int
    engine_requests: int  # chat requests the engine received: calls + retries + the kernel's resumes
    preemptions: int
    recomputed_tokens: int
    max_running_seen: int
    errors: list[str] = field(default_factory=list)
    completion_s: list[float] = field(default_factory=list)


def summarise(
    mode: str,
    runs: Sequence[AgentRun],
    progs: Sequence[Program],
    regime: Regime,
    stats: Mapping[str, Any],
    attempts: int = 0,
    client_429s: int = 0,
) -> ModeResult:
    scale = regime.sim["time_scale"]
    profile = get_profile(regime.profile).with_overrides(**regime.sim)
    alone = {p.name: ideal_s(p, profile) for p in progs}
    done = [r for r in runs if r.error is None]
    times = [r.end_s / scale for r in done]
    slow = [t / alone[r.name] for r, t in zip(done, times, strict=True)]
    makespan = max(r.end_s for r in runs) / scale
    calls = sum(r.calls for r in runs)
    return ModeResult(
        mode=mode,
        agents=len(runs),
        completed=len(done),
        failed=len(runs) - len(done),
        calls=calls,
        makespan_s=makespan,
        agents_per_min=60.0 * len(done) / makespan,
        calls_per_s=calls / makespan,
        completion_mean_s=statistics.fmean(times) if times else math.nan,
        completion_p50_s=pct(times, 0.5),
        completion_p99_s=pct(times, 0.99),
        slowdown_mean=statistics.fmean(slow) if slow else math.nan,
        jain_slowdown=jain(slow),
        jain_completion=jain(times),
        retries=max(0, attempts - sum(r.calls + (r.error is not None) for r in runs)) if attempts else 0,
        client_429s=client_429s,
        engine_429s=int(stats.get("429s", 0)),
        engine_requests=int(stats.get("requests", 0)),
        preemptions=int(stats.get("preemptions", 0)),
        recomputed_tokens=int(stats.get("recomputed_tokens", 0)),
        max_running_seen=int(stats.get("max_running_seen", 0)),
        errors=sorted({r.error for r in runs if r.error})[:5],
        completion_s=sorted(round(t, 3) for t in times),
    )


async def reset(url: str) -> None:
    async with httpx.AsyncClient() as h:
        (await h.post(url + "/sim/reset")).raise_for_status()


async def measure(
    progs: Sequence[Program],
    regs: Sequence[Regime],
    modes: Sequence[str],
    ts: float,
    workdir: Path,
    progress: Callable[[str], None],
) -> dict[str, dict[str, ModeResult]]:
    spec = {f"{r.key}-{m}": (r.profile, r.sim) for r in regs for m in modes}
    kernel_modes = [m for m in modes if m != "direct"]
    out: dict[str, dict[str, ModeResult]] = {r.key: {} for r in regs}
    async with sim_host(spec) as urls, contextlib.AsyncExitStack() as stack:
        aios: AIOS | None = None
        if kernel_modes:
            config = stack_config(regs, kernel_modes, urls, ts)
            home = await stack.enter_async_context(aios_stack(workdir, config))
            aios = await stack.enter_async_context(AIOS.connect(home=home))
        for r in regs:
            for m in modes:
                url = urls[f"{r.key}-{m}"]
                progress(f"regime ({r.key}) {m}: {len(progs)} agents ...")
                if m == "direct":
                    runs, attempts, c429 = await run_direct(progs, url, r.sim_model, ts)
                    res = summarise(m, runs, progs, r, await sim_stats(url), attempts, c429)
                else:
                    assert aios is not None
                    await warm_kernel(aios, kernel_model(r.key, m))
                    await reset(url)
                    runs = await run_kernel(aios, progs, kernel_model(r.key, m), ts)
                    res = summarise(m, runs, progs, r, await sim_stats(url))
                out[r.key][m] = res
                progress(
                    f"  done: {res.completed}/{res.agents} agents, makespan"
                    f" {res.makespan_s:.1f} s modelled ({res.makespan_s * ts:.1f} s real)"
                )
    return out


def ratios(modes: Mapping[str, ModeResult]) -> dict[str, dict[str, float]]:
    d = modes.get("direct")
    out: dict[str, dict[str, float]] = {}
    for name, m in modes.items():
        row: dict[str, float] = {}
        if d is not None and d.agents_per_min > 0:
            row["throughput_vs_direct"] = m.agents_per_min / d.agents_per_min
            row["calls_per_s_vs_direct"] = m.calls_per_s / d.calls_per_s
            row["mean_completion_vs_direct"] = m.completion_mean_s / d.completion_mean_s
        if "fifo" in modes:
            row["mean_completion_vs_fifo"] = m.completion_mean_s / modes["fifo"].completion_mean_s
            row["p99_completion_vs_fifo"] = m.completion_p99_s / modes["fifo"].completion_p99_s
        out[name] = row
    return out


TARGETS = {"a": 0.97, "b": 3.0, "c": 2.0}


def targets(
    key: str, modes: Mapping[str, ModeResult], rat: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    """The issue's targets, met or not, from this run's ratios."""
    out: dict[str, Any] = {}
    kernel = [m for m in modes if m != "direct"]
    if "direct" in modes and kernel:
        if key == "a":
            worst = min(kernel, key=lambda m: rat[m].get("throughput_vs_direct", math.nan))
            value = rat[worst]["throughput_vs_direct"]
            out["kernel_throughput_vs_direct"] = {
                "target": ">= 0.97 (every kernel mode)",
                "mode": worst,
                "value": value,
            }
        elif "las" in modes:
            value = rat["las"]["throughput_vs_direct"]
            out["las_throughput_vs_direct"] = {"target": f">= {TARGETS[key]}", "value": value}
        for item in out.values():
            item["met"] = item["value"] >= TARGETS[key]
    if "las" in modes and "fifo" in modes:
        mean_r, p99_r = rat["las"]["mean_completion_vs_fifo"], rat["las"]["p99_completion_vs_fifo"]
        out["las_mean_vs_fifo"] = {
            "target": "<= 0.6, p99 not worse",
            "value": mean_r,
            "p99": p99_r,
            "met": mean_r <= 0.6 and p99_r <= 1.0,
        }
    return out


COLUMNS = (  # header, width, format, ModeResult field
    ("mode", 13, "", "mode"),
    ("done", 8, "", ""),
    ("agents/min", 10, ".1f", "agents_per_min"),
    ("calls/s", 8, ".2f", "calls_per_s"),
    ("x direct", 8, ".2f", ""),
    ("makespan", 9, ".1f", "makespan_s"),
    ("mean", 7, ".1f", "completion_mean_s"),
    ("p50", 7, ".1f", "completion_p50_s"),
    ("p99", 7, ".1f", "completion_p99_s"),
    ("slowdown", 8, ".2f", "slowdown_mean"),
    ("jain", 5, ".2f", "jain_slowdown"),
    ("retries", 7, "", "retries"),
    ("429s", 6, "", "engine_429s"),
    ("requests", 8, "", "engine_requests"),
    ("preempt", 7, "", "preemptions"),
    ("recomputed", 10, "", "recomputed_tokens"),
    ("max run", 7, "", "max_running_seen"),
)


def table(modes: Mapping[str, ModeResult], rat: Mapping[str, Mapping[str, float]]) -> str:
    """The modes of one regime, one line each (times in modelled seconds)."""
    lines = [" ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w, _, _) in enumerate(COLUMNS))]
    for name, m in modes.items():
        cells = []
        for i, (h, w, fmt, attr) in enumerate(COLUMNS):
            if h == "done":
                value: object = f"{m.completed}/{m.agents}"
            elif h == "x direct":
                value = rat[name].get("throughput_vs_direct", math.nan)
            else:
                value = getattr(m, attr)
            cells.append(f"{value:<{w}{fmt}}" if i == 0 else f"{value:>{w}{fmt}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    mem = 0
    with contextlib.suppress(ValueError, OSError):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_1min": os.getloadavg()[0],
    }


def plot(results: Mapping[str, Mapping[str, ModeResult]], regs: Mapping[str, Regime], path: Path) -> str:
    """Per-regime CDFs of agent completion time, one line a mode; what was done, as a sentence."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib, or the dev extra)"
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (key, modes) in zip(axes[0], results.items(), strict=True):
        for name, m in modes.items():
            xs = m.completion_s
            ax.step(xs, [(i + 1) / m.agents for i in range(len(xs))], where="post", label=name)
        ax.set_title(f"({key}) {regs[key].title}", fontsize=9)
        ax.set_xlabel("agent completion (modelled s)")
        ax.set_ylabel("fraction of agents done")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("AIOS paper experiment: agent completion CDFs (SIMULATOR)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.paper", description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=250)
    ap.add_argument("--regime", choices=[*REGIMES, "all"], default="all")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workload", choices=WORKLOADS, default="mix")
    ap.add_argument("--time-scale", type=float, default=0.2, help="the simulator's (modelled time x scale)")
    ap.add_argument("--smoke", action="store_true", help="8 agents, time scale 0.01: < 30 s, for CI")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where paper.json and paper.png go")
    args = ap.parse_args(argv)
    if args.smoke:
        args.agents, args.time_scale = 8, 0.01
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    skipped: list[str] = []
    if "las-adaptive" in modes and not adaptive_supported():
        modes.remove("las-adaptive")
        skipped.append("las-adaptive: the backend setting `adaptive` does not exist yet (llm/config.py)")
        print(f"skipped {skipped[-1]}", flush=True)
    progs = programs(args.workload, args.agents, args.seed)
    all_regs = regimes(progs, args.time_scale)
    regs = [all_regs[k] for k in (REGIMES if args.regime == "all" else (args.regime,))]
    command = shlex.join(["python", "-m", "bench.paper", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now(datetime.UTC)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aios-paper-") as d:
        results = asyncio.run(
            measure(
                progs, regs, modes, args.time_scale, Path(d), lambda s: print(s, file=sys.stderr, flush=True)
            )
        )
    shapes = {s: sum(p.shape == s for p in progs) for s in sorted({p.shape for p in progs})}
    print(
        f"\nAIOS paper experiment (SIMULATOR figures; times in modelled seconds = real / {args.time_scale})\n"
        f"{args.agents} agents, workload {args.workload} {shapes}, {sum(p.calls for p in progs)} calls,"
        f" seed {args.seed}, {started:%Y-%m-%d}, {os.cpu_count()} cores, command: {command}"
    )
    report: dict[str, Any] = {
        "benchmark": "paper (issue 13, scenario A)",
        "simulator": "aios sim: modelled timing, synthetic text; every figure here is a simulator figure",
        "date": started.isoformat(timespec="seconds"),
        "command": command,
        "seed": args.seed,
        "smoke": args.smoke,
        "workload": args.workload,
        "agents": args.agents,
        "shapes": shapes,
        "time_scale": args.time_scale,
        "machine": machine(),
        "wall_s": None,
        "skipped": skipped,
        "regimes": {},
    }
    for r in regs:
        modes_r = results[r.key]
        rat = ratios(modes_r)
        tg = targets(r.key, modes_r, rat)
        print(
            f"\n({r.key}) {r.title}: profile {r.profile} {r.sim}; kernel slots {r.slots}, ahead {r.ahead}"
            + (f", rpm {r.rpm}, tpm {r.tpm}" if r.rpm else "")
        )
        print(table(modes_r, rat))
        for name, item in tg.items():
            extra = f", p99 {item['p99']:.2f}" if "p99" in item else ""
            verdict = "met" if item["met"] else "MISSED"
            print(f"  target {name} {item['target']}: {item['value']:.2f}{extra} -> {verdict}")
        report["regimes"][r.key] = {
            "title": r.title,
            "sim": {"profile": r.profile, **r.sim},
            "kernel": {
                "slots": r.slots,
                "ahead": r.ahead,
                "rpm": r.rpm,
                "tpm": r.tpm,
                "continue_partial": r.continue_partial,
                "las_adaptive_slots": HIGH_SLOTS,
            },
            "modes": {name: asdict(m) for name, m in modes_r.items()},
            "ratios": rat,
            "targets": tg,
        }
    report["wall_s"] = round(time.perf_counter() - t, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper.json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"\nresults: {args.out / 'paper.json'}; "
        + plot(results, {r.key: r for r in regs}, args.out / "paper.png")
    )
    return report


if __name__ == "__main__":
    main()
