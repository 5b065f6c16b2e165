"""The `aios` command: up, down, status, sim, service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .home import Home, pid_alive
from .status import collect
from .supervisor import UpOptions, run_supervisor

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="AIOS: an operating system for LLM agents."
)
console = Console()

HomeOpt = Annotated[str | None, typer.Option("--home", help="AIOS home (default $AIOS_HOME, else ./.aios).")]


@app.command()
def up(
    home: HomeOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    local_model: Annotated[
        bool, typer.Option("--local-model", help="Also serve SmolLM2-135M via llama.cpp.")
    ] = False,
    sim: Annotated[bool, typer.Option("--sim/--no-sim", help="Start the engine simulator backend.")] = True,
    sim_profile: Annotated[str, typer.Option(help="Simulator profile.")] = "fixed",
    policy: Annotated[str, typer.Option(help="Scheduling policy: las | fifo | rr | priority.")] = "las",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness with --detach.")] = 180.0,
    nats_port: Annotated[int | None, typer.Option(help="NATS client port (default: a free one).")] = None,
) -> None:
    """Start the embedded stack: nats-server, weed mini, backends and the kernel services."""
    h = Home.resolve(home)
    state = h.read_state()
    if state is not None and pid_alive(state.supervisor_pid):
        console.print(f"AIOS is already running in {h.root} (supervisor pid {state.supervisor_pid}).")
        raise typer.Exit(0)
    opts = UpOptions(
        sim=sim, sim_profile=sim_profile, local_model=local_model, policy=policy, nats_port=nats_port
    )
    if not detach:
        raise typer.Exit(run_supervisor(h, opts))
    h.root.mkdir(parents=True, exist_ok=True)
    (h.root / "logs").mkdir(exist_ok=True)
    h.state_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "aios_services.cli.main", "supervise", "--home", str(h.root)]
    argv += ["--sim" if sim else "--no-sim", "--sim-profile", sim_profile, "--policy", policy]
    if local_model:
        argv.append("--local-model")
    if nats_port:
        argv += ["--nats-port", str(nats_port)]
    with open(h.root / "logs" / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = h.read_state()
        if state is not None and state.status in ("ready", "failed"):
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    state = h.read_state()
    if state is None or state.status != "ready":
        why = state.error if state else "supervisor exited"
        console.print(f"[red]AIOS failed to start[/red]: {why}; see {h.root / 'logs'}")
        if proc.poll() is None:
            proc.terminate()
        raise typer.Exit(1)
    _print_status(h)


@app.command(hidden=True)
def supervise(
    home: HomeOpt = None,
    local_model: Annotated[bool, typer.Option("--local-model")] = False,
    sim: Annotated[bool, typer.Option("--sim/--no-sim")] = True,
    sim_profile: Annotated[str, typer.Option()] = "fixed",
    policy: Annotated[str, typer.Option()] = "las",
    nats_port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Run the supervisor in the foreground (what `aios up --detach` starts)."""
    opts = UpOptions(
        sim=sim, sim_profile=sim_profile, local_model=local_model, policy=policy, nats_port=nats_port
    )
    raise typer.Exit(run_supervisor(Home.resolve(home), opts))


@app.command()
def down(
    home: HomeOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a clean stop.")] = 60.0,
) -> None:
    """Stop everything `aios up` started in this home, cleanly."""
    h = Home.resolve(home)
    state = h.read_state()
    if state is None or not pid_alive(state.supervisor_pid):
        console.print(f"AIOS is not running in {h.root}.")
        h.state_file.unlink(missing_ok=True)
        return
    pids = [state.supervisor_pid] + [p.pid for p in state.processes]
    os.kill(state.supervisor_pid, 15)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    left = [p for p in pids if pid_alive(p)]
    for pid in left:  # the supervisor did not finish in time: no process may outlive `down`
        os.kill(pid, 9)
    h.state_file.unlink(missing_ok=True)
    console.print(f"AIOS stopped{' (forced)' if left else ''}.")


@app.command()
def status(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every process of the stack, its pid, address and health."""
    h = Home.resolve(home)
    if as_json:
        st = asyncio.run(collect(h))
        print(st.model_dump_json(indent=2))
        raise typer.Exit(0 if st.running else 3)
    raise typer.Exit(_print_status(h))


def _print_status(h: Home) -> int:
    st = asyncio.run(collect(h))
    if not st.running:
        console.print(f"AIOS is not running in {h.root}.")
        return 3
    table = Table(title=f"AIOS {st.status} - home {st.home}")
    for col in ("process", "kind", "pid", "health", "address", "restarts"):
        table.add_column(col)
    for p in st.processes:
        health = (
            "[green]ok[/green]" if p.healthy else ("[yellow]unhealthy[/yellow]" if p.alive else "[red]dead")
        )
        table.add_row(p.name, p.kind, str(p.pid), health, p.address or "", str(p.restarts))
    console.print(table)
    console.print(f"SDK: AIOS_HOME={st.home}  (AIOS.connect() reads {st.home}/connection.json)")
    return 0


@app.command()
def top(
    home: HomeOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable snapshot (with --once).")] = False,
) -> None:
    """Live view of the scheduler: each resource's capacity, running and queued calls, by agent."""
    from aios_schemas import Namespace

    from .top import fetch_stats, live, render

    h = Home.resolve(home)
    state = h.read_state()
    if state is None or not pid_alive(state.supervisor_pid):
        console.print(f"AIOS is not running in {h.root}.")
        raise typer.Exit(3)
    ns = Namespace(os.environ.get("AIOS_NAMESPACE", ""))
    if once:
        st = asyncio.run(fetch_stats(state.nats_url, ns))
        if as_json:
            print(st.model_dump_json(indent=2))
        else:
            console.print(render(st))
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(live(state.nats_url, ns))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False
)
def sim(ctx: typer.Context) -> None:
    """Run the LLM engine simulator (OpenAI-compatible HTTP; see `aios sim --help`)."""
    from aios_services.sim.main import main as sim_main

    sim_main(list(ctx.args))


@app.command()
def service(name: Annotated[str, typer.Argument(help="scheduler | llm")]) -> None:
    """Run one kernel service in the foreground (settings from AIOS_* environment variables)."""
    mains = {"scheduler": "aios_services.scheduler.main", "llm": "aios_services.llm.main"}
    if name not in mains:
        console.print(f"unknown service {name!r}; one of {', '.join(mains)}")
        raise typer.Exit(2)
    import importlib

    importlib.import_module(mains[name]).main()


if __name__ == "__main__":
    app()
