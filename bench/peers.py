"""Issue 13 scenario C: the kernel's overhead measured the way the gateway benchmarks measure it, with
the LiteLLM proxy beside it as the peer, against the same zero-latency engine SIMULATOR, same run.

Paths (each a separate process chain, all on 127.0.0.1):
- `direct`: HTTP straight to the simulator (the baseline);
- `gateway`: HTTP to AIOS's OpenAI-compatible gateway (`aios up`), i.e. gateway -> NATS ->
  scheduler -> llm service -> simulator;
- `sdk`: the AIOS Python SDK over NATS (no gateway);
- `litellm`: HTTP to the LiteLLM proxy (`litellm[proxy]`, its own venv, default settings, one
  worker) -> simulator.

The HTTP paths share one load generator (aiohttp, keep-alive; lighter than the `openai` client, so
the generator's own cost weighs less). Measured:
1. added p50/p99 at one request at a time (the paths interleaved, so drift hits all alike);
2. the added delay of the first streamed token (same, `stream: true`);
3. open-loop rate ladder: at each rate, every path for `--seconds`; the highest rate each path
   sustains with added p99 (vs direct at the same rate) under 1, 5, 10 and 50 ms, no errors;
4. CPU per call of each path's processes (less what they burn idle), from /proc.

Run: `.venv/bin/python -m bench.peers` (`--smoke`: a few seconds, no LiteLLM unless installed;
`--no-litellm`). The LiteLLM venv is `$AIOS_LITELLM_VENV` or ~/.cache/aios/litellm-venv, created on
first use (`pip install 'litellm[proxy]'`). Writes bench/results/peers.json and peers.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from aios_sdk import AIOS
from aios_services.cli.home import Home
from aios_services.cli.procs import free_port
from bench.kernel_overhead import cpu_s, pct
from bench.many_agents import MODEL, engine, kernel
from bench.rate_sweep import open_loop

PROMPT = [{"role": "user", "content": "ping [sim:tokens=8]"}]
THRESHOLDS_MS = (1.0, 5.0, 10.0, 50.0)
RESULTS = Path(__file__).parent / "results"
LITELLM_KEY = "sk-aios-bench-" + "0" * 32  # the proxy refuses to start without a master key
Call = Callable[[], Awaitable[object]]


# --- the peer -------------------------------------------------------------------------------------
def litellm_venv() -> Path:
    return Path(os.environ.get("AIOS_LITELLM_VENV", Path.home() / ".cache/aios/litellm-venv"))


def ensure_litellm(install: bool) -> Path | None:
    """The `litellm` command of its own venv (its dependencies clash with the kernel's), installed
    on first use when `install`."""
    venv = litellm_venv()
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    if not install:
        return None
    print(f"installing litellm[proxy] into {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


def litellm_version(exe: Path) -> str:
    out = subprocess.run(
        [str(exe.parent / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


@contextlib.asynccontextmanager
async def litellm_proxy(exe: Path, sim_url: str, d: Path) -> AsyncIterator[tuple[str, int, str]]:
    """The proxy on a free port with one model routed to the simulator: (its /v1 URL, its pid, its
    key). It authenticates requests with a master key, as the gateway checks the agent's."""
    config = d / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {sim_url}\n"
        "      api_key: sim\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch from the internet at start
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_MASTER_KEY": LITELLM_KEY,
    }
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        *["--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as h:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with h.get(url + "/health/liveliness") as r:
                        if r.status == 200:
                            break
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError("the LiteLLM proxy did not start")
                await asyncio.sleep(0.5)
        yield url + "/v1", proc.pid, LITELLM_KEY
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


# --- calls ----------------------------------------------------------------------------------------
def http_call(session: aiohttp.ClientSession, base: str, key: str, *, stream: bool = False) -> Call:
    """One chat completion over HTTP; with `stream`, returns at the first content chunk (and reads
    the rest, so the connection is reusable)."""
    url = base + "/chat/completions"
    body = json.dumps({"model": MODEL, "messages": PROMPT, "stream": stream}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def call() -> float:
        t = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as r:
            if r.status != 200:
                raise RuntimeError(f"{base}: HTTP {r.status}: {(await r.text())[:200]}")
            if not stream:
                await r.read()
                return time.perf_counter() - t
            first = None
            async for line in r.content:
                if first is None and line.startswith(b"data: {") and _has_content(line[6:]):
                    first = time.perf_counter() - t
            if first is None:
                raise RuntimeError(f"{base}: no content chunk in the stream")
            return first

    return call


def _has_content(data: bytes) -> bool:
    chunk = json.loads(data)
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


def sdk_call(aios: AIOS, *, stream: bool = False) -> Call:
    async def call() -> float:
        t = time.perf_counter()
        if not stream:
            await aios.llm.chat(MODEL, PROMPT)
            return time.perf_counter() - t
        first = None
        async with aios.llm.stream(MODEL, PROMPT) as s:
            async for _ in s:
                if first is None:
                    first = time.perf_counter() - t
        assert first is not None
        return first

    return call


# --- measurements ---------------------------------------------------------------------------------
async def interleaved(calls: dict[str, Call], n: int, warmup: int = 20) -> dict[str, list[float]]:
    """Each path once per round, `n` rounds; what each call returned (seconds) in ms."""
    for _ in range(warmup):
        for call in calls.values():
            await call()
    out: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(n):
        for name, call in calls.items():
            out[name].append(float(await call()) * 1000)  # type: ignore[arg-type]
    return out


def summary(xs: list[float], base: list[float]) -> dict[str, float]:
    p50, p99 = statistics.median(xs), pct(xs, 99)
    return {
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "added_p50_ms": round(p50 - statistics.median(base), 3),
        "added_p99_ms": round(p99 - pct(base, 99), 3),
    }


async def ladder(
    calls: dict[str, Call], rates: list[float], seconds: float
) -> dict[str, list[dict[str, float]]]:
    """Every path at every rate (direct first, as the baseline of that rate); a path leaves the
    ladder once its added p99 passes the largest threshold or it fails calls."""
    out: dict[str, list[dict[str, float]]] = {name: [] for name in calls}
    live = set(calls)
    for rate in rates:
        base, _ = await open_loop(calls["direct"], rate, seconds)
        out["direct"].append({"rate": rate, "p50_ms": statistics.median(base), "p99_ms": pct(base, 99)})
        for name, call in calls.items():
            if name == "direct" or name not in live:
                continue
            lat, errors = await open_loop(call, rate, seconds)
            row = {"rate": rate, "errors": float(errors), **summary(lat or [1e9], base)}
            out[name].append(row)
            print(
                f"  {rate:6.0f}/s {name:<8} p50 {row['p50_ms']:8.2f} p99 {row['p99_ms']:8.2f} "
                f"added p99 {row['added_p99_ms']:+8.2f} ms errors {errors}",
                flush=True,
            )
            if errors or row["added_p99_ms"] > THRESHOLDS_MS[-1]:
                live.discard(name)
        if live == {"direct"}:
            break
    return out


def sustained(rows: list[dict[str, float]]) -> dict[str, float | None]:
    """Per threshold, the highest rate whose added p99 stayed under it (with every lower rate too)."""
    best: dict[str, float | None] = {}
    for limit in THRESHOLDS_MS:
        top = None
        for row in rows:
            if row.get("errors") or row["added_p99_ms"] > limit:
                break
            top = row["rate"]
        best[f"{limit:g}ms"] = top
    return best


async def cpu_per_call(call: Call, pids: dict[str, int], n: int) -> dict[str, float]:
    """CPU ms per call of each process in `pids` (this one included as `client`), over `n`
    sequential calls, less their idle burn measured just before."""
    pids = {**pids, "client": os.getpid()}
    before = {k: cpu_s(p) for k, p in pids.items()}
    await asyncio.sleep(2.0)
    idle = {k: (cpu_s(p) - before[k]) / 2.0 for k, p in pids.items()}
    before = {k: cpu_s(p) for k, p in pids.items()}
    t = time.monotonic()
    for _ in range(n):
        await call()
    took = time.monotonic() - t
    return {k: round(max(0.0, cpu_s(p) - before[k] - idle[k] * took) * 1000 / n, 3) for k, p in pids.items()}


# --- the run --------------------------------------------------------------------------------------
async def run(args: argparse.Namespace) -> dict[str, object]:
    exe = None if args.no_litellm else ensure_litellm(install=not args.smoke)
    result: dict[str, object] = {
        "scenario": "C: overhead vs the LiteLLM proxy",
        "simulator": "all figures against the AIOS engine SIMULATOR with zero model time",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "python -m bench.peers " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "litellm": litellm_version(exe) if exe else None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            sim_url = await stack.enter_async_context(engine(slots=1024, decode_ms=0.0, prefill_ms=0.0))
            home = await stack.enter_async_context(kernel(d, sim_url, 1024, "las", 1))
            aios = await stack.enter_async_context(AIOS.connect(home=home))
            state = Home(home).read_state()
            assert state is not None and aios.conn.gateway_url
            pids = {p.name: p.pid for p in state.processes if p.pid}
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
            )
            key = f"{aios.agent}:{aios.conn.token}"
            calls: dict[str, Call] = {
                "direct": http_call(session, sim_url, "sim"),
                "gateway": http_call(session, aios.conn.gateway_url, key),
                "sdk": sdk_call(aios),
            }
            streams: dict[str, Call] = {
                "direct": http_call(session, sim_url, "sim", stream=True),
                "gateway": http_call(session, aios.conn.gateway_url, key, stream=True),
                "sdk": sdk_call(aios, stream=True),
            }
            litellm_pid = None
            if exe is not None:
                litellm_url, litellm_pid, lkey = await stack.enter_async_context(
                    litellm_proxy(exe, sim_url, d)
                )
                calls["litellm"] = http_call(session, litellm_url, lkey)
                streams["litellm"] = http_call(session, litellm_url, lkey, stream=True)

            print(f"1. one request at a time, {args.n} rounds, paths interleaved", flush=True)
            seq = await interleaved(calls, args.n)
            result["sequential"] = {k: summary(v, seq["direct"]) for k, v in seq.items()}
            table(result["sequential"])  # type: ignore[arg-type]

            print(f"2. first streamed token, {args.n // 2} rounds", flush=True)
            ttft = await interleaved(streams, args.n // 2, warmup=5)
            result["first_token"] = {k: summary(v, ttft["direct"]) for k, v in ttft.items()}
            table(result["first_token"])  # type: ignore[arg-type]

            print(f"3. open-loop rate ladder, {args.seconds:g} s per rate and path", flush=True)
            rows = await ladder(calls, args.rates, args.seconds)
            result["ladder"] = rows
            result["sustained"] = {k: sustained(v) for k, v in rows.items() if k != "direct"}
            for name, best in result["sustained"].items():  # type: ignore[attr-defined]
                print(
                    f"  {name:<8} highest rate with added p99 under "
                    + ", ".join(f"{k}: {v:g}/s" if v else f"{k}: -" for k, v in best.items())
                )

            print(f"4. CPU per call, {args.cpu_n} sequential calls per path", flush=True)
            kernel_procs = {k: v for k, v in pids.items() if k in ("nats", "scheduler", "llm", "recorder")}
            # Direct calls touch only the engine (the same for every path): no row of their own.
            cpu = {
                "sdk": await cpu_per_call(calls["sdk"], kernel_procs, args.cpu_n),
                "gateway": await cpu_per_call(
                    calls["gateway"], {**kernel_procs, "gateway": pids["gateway"]}, args.cpu_n
                ),
            }
            if litellm_pid is not None:
                cpu["litellm"] = await cpu_per_call(calls["litellm"], {"litellm": litellm_pid}, args.cpu_n)
            result["cpu_ms_per_call"] = cpu
            for name, per in cpu.items():
                server = sum(v for k, v in per.items() if k != "client")
                print(
                    f"  {name:<8} {server:6.2f} ms in its processes ({per}); the client {per['client']:.2f}"
                )
    return result


def table(rows: dict[str, dict[str, float]]) -> None:
    print(f"  {'path':<8} {'p50 ms':>8} {'p99 ms':>8}   added p50 / p99")
    for name, r in rows.items():
        added = "" if name == "direct" else f"{r['added_p50_ms']:+.2f} / {r['added_p99_ms']:+.2f}"
        print(f"  {name:<8} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}   {added}")


def plot(result: dict[str, object], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in result["ladder"].items():  # type: ignore[attr-defined]
        if name == "direct":
            continue
        ax.plot(
            [r["rate"] for r in rows], [max(0.01, r["added_p99_ms"]) for r in rows], marker="o", label=name
        )
    ax.set_xlabel("requests/s (open loop)")
    ax.set_ylabel("added p99 vs direct (ms, log)")
    ax.set_yscale("log")
    ax.set_title("Added p99 latency vs load (engine SIMULATOR, zero model time)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="rounds of one-at-a-time calls")
    ap.add_argument("--rates", type=float, nargs="+", default=[25, 50, 100, 200, 300, 400, 600])
    ap.add_argument("--seconds", type=float, default=4.0, help="per rate and path")
    ap.add_argument("--cpu-n", type=int, default=300)
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="a few seconds; LiteLLM only if installed")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where peers.json and peers.png go")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.rates, args.seconds, args.cpu_n = 20, [20, 40], 0.5, 20
    result = asyncio.run(run(args))
    result["smoke"] = args.smoke
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "peers.png")
    print(f"wrote {args.out / 'peers.json'}")


if __name__ == "__main__":
    main()
