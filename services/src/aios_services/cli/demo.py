"""`make demo`: bring the embedded stack up with the real local model, run agents through the
kernel, show what happened, and stop everything."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from aios_schemas import Namespace
from aios_sdk import AIOS, InvalidRequest, NotFound

from .home import Home
from .supervisor import LOCAL_MODEL, SIM_MODEL
from .top import fetch_stats, render

console = Console()


def _aios(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "aios_services.cli.main", *args])


async def agents(home: Home) -> None:
    async with AIOS.connect(home=home.root, agent="researcher") as aios:
        console.rule(f"1. One agent asks the real local model ({LOCAL_MODEL}, llama.cpp)")
        q = "What is the capital of France? Answer in one sentence."
        t0 = time.perf_counter()
        r = await aios.llm.chat(LOCAL_MODEL, [{"role": "user", "content": q}], max_tokens=48, temperature=0)
        console.print(f"[bold]Q:[/bold] {q}\n[bold]A:[/bold] {r.content}")
        console.print(
            f"   {time.perf_counter() - t0:.2f}s, usage {r.usage.model_dump()}, backend {r.backend}"
        )

        console.rule("2. Streaming tokens as they are generated")
        async with aios.llm.stream(
            LOCAL_MODEL, [{"role": "user", "content": "List three colours."}], max_tokens=40
        ) as stream:
            async for delta in stream:
                console.print(delta, end="", markup=False, highlight=False)
        console.print()

        console.rule("3. A forced tool call")
        tool = {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather of a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
        r = await aios.llm.chat(
            LOCAL_MODEL,
            [{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=64,
        )
        for call in r.tool_calls or []:
            console.print(f"   {call.function.name}({call.function.arguments})")

        console.rule("4. Typed errors, never a hang")
        try:
            await aios.llm.chat("no-such-model", [{"role": "user", "content": "hi"}], timeout=10)
        except NotFound as exc:
            console.print(f"   unknown model  -> {type(exc).__name__} ({exc.code}) {exc.message}")
        try:
            await aios.llm.chat(LOCAL_MODEL, [{"role": "user", "content": "hi"}], temperature=5)
        except InvalidRequest as exc:
            console.print(f"   temperature=5  -> {type(exc).__name__} ({exc.code}) {exc.message}")

    console.rule(f"5. 32 agents share one engine with 8 slots ({SIM_MODEL}: the SIMULATOR, not a GPU)")

    async def agent(i: int) -> tuple[str, float]:
        async with AIOS.connect(home=home.root, agent=f"agent-{i:02d}") as a:
            t = time.perf_counter()
            for step in range(3):
                await a.llm.chat(
                    SIM_MODEL, [{"role": "user", "content": f"agent {i} step {step} [sim:tokens=24]"}]
                )
            return a.agent, time.perf_counter() - t

    t0 = time.perf_counter()
    results = await asyncio.gather(*(agent(i) for i in range(32)))
    wall = time.perf_counter() - t0
    table = Table("agents", "syscalls", "wall (s)", "mean agent time (s)", "max agent time (s)")
    times = [t for _, t in results]
    table.add_row("32", "96", f"{wall:.2f}", f"{sum(times) / len(times):.2f}", f"{max(times):.2f}")
    console.print(table)

    console.rule("6. What the scheduler saw (`aios top --once`)")
    state = home.read_state()
    assert state is not None
    console.print(render(await fetch_stats(home.bus_url(state), Namespace())))


def main() -> None:
    home = Home.resolve(None)
    console.rule("AIOS demo: starting the embedded stack (nats-server, weed mini, simulator, SmolLM2)")
    # The demo's agents, each with its own token (agents/NAME.token) and only its own subjects.
    names = ", ".join(f'"{a}"' for a in ["researcher", *(f"agent-{i:02d}" for i in range(32))])
    config = Path(tempfile.mkdtemp(prefix="aios-demo-")) / "aios.toml"
    config.write_text(f"agents = [{names}]\n")
    if _aios("up", "--detach", "--local-model", "--home", str(home.root), "--config", str(config)) != 0:
        sys.exit(1)
    code = 0
    try:
        asyncio.run(agents(home))
    except Exception as exc:
        console.print(f"[red]demo failed[/red]: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        console.rule("Stopping")
        _aios("down", "--home", str(home.root))
    sys.exit(code)


if __name__ == "__main__":
    main()
