"""The `aios` command: up, down, status, models, top, sim, service."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import access as access_cli
from .bench import bench_cmd
from .config import ConfigError, default_config_path
from .files import files_app
from .home import Home, HomeError, State
from .memory import memory_app
from .runs import kill_cmd, logs_cmd, ps_cmd, run_cmd
from .schema import schema_app
from .stack import marker_env, scan, stop_stack
from .status import collect
from .storage import storage_app
from .supervisor import UpOptions, check_options, run_supervisor
from .tools import tools_cmd
from .traces import stats_cmd, trace_cmd

console = Console()
errors = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")


def one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Known errors (a bad home, a bad config) are one line and exit code 2, never a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (HomeError, ConfigError) as exc:
            fail(str(exc))

    return run


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="AIOS: an operating system for LLM agents.",
)

app.add_typer(files_app, name="files")
app.add_typer(memory_app, name="memory")
app.add_typer(storage_app, name="storage")
app.add_typer(schema_app, name="schema")
app.command("tools")(tools_cmd)
app.command("bench")(bench_cmd)
app.command("trace")(trace_cmd)
app.command("stats")(stats_cmd)
app.command("run")(run_cmd)
app.command("ps")(ps_cmd)
app.command("logs")(logs_cmd)
app.command("kill")(kill_cmd)
app.add_typer(access_cli.agent_app, name="agent")
app.add_typer(access_cli.group_app, name="group")
app.add_typer(access_cli.rule_app, name="rule")
app.command("approvals")(access_cli.approvals)
app.command("approve")(access_cli.approve)
app.command("reject")(access_cli.reject)
app.command("audit")(access_cli.audit)

HomeOpt = Annotated[str | None, typer.Option("--home", help="AIOS home (default $AIOS_HOME, else ./.aios).")]
PortOpt = Annotated[
    int | None, typer.Option(min=1, max=65535, help="NATS client port (default: a free one).")
]

ClusterOpt = Annotated[
    int,
    typer.Option(
        "--cluster",
        min=1,
        max=9,
        help="nats-server nodes: 3 runs a JetStream cluster on loopback, streams and KV with 3 replicas "
        "(default 1: one server).",
    ),
]

ReplicasOpt = Annotated[
    int,
    typer.Option(
        "--replicas",
        min=1,
        max=8,
        help="Processes of each kernel service: memory and storage split their data by agent between "
        "them, the gateway's share its port, the recorder and access keep one active and the others on "
        "standby. Default 1.",
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear message on stderr (no traceback) and the exit code: 2 for a usage or config error."""
    errors.print(f"[red]aios:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _home(home: str | None) -> Home:
    return Home.resolve(home)


def _config_path(config: Path | None, h: Home) -> Path | None:
    if config is not None:
        return config.resolve()
    default = default_config_path(h.root)
    return default if default.is_file() else None


def _say(text: str) -> None:
    console.print(escape(text))


@app.command()
@one_line_errors
def up(
    home: HomeOpt = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="AIOS_CONFIG",
            help="The operator's config: models and backends, scheduler policy and quotas, agents "
            "(default: aios.toml beside the home, if present). Read, never written.",
        ),
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    local_model: Annotated[
        bool, typer.Option("--local-model", help="Also serve SmolLM2-135M via llama.cpp.")
    ] = False,
    sim: Annotated[bool, typer.Option("--sim/--no-sim", help="Start the engine simulator backend.")] = True,
    sim_profile: Annotated[str, typer.Option(help="Simulator profile.")] = "fixed",
    policy: Annotated[
        str | None,
        typer.Option(help="Scheduling policy: las | fifo | rr | priority (default: the config's, else las)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for readiness with --detach.")
    ] = 180.0,
    nats_port: PortOpt = None,
    cluster: ClusterOpt = 1,
    replicas: ReplicasOpt = 1,
) -> None:
    """Start the embedded stack: nats-server, weed mini, backends and the kernel services."""
    h = _home(home)
    h.prepare()
    supervisor = h.lock_holder()
    if supervisor is not None:
        console.print(f"AIOS is already running in {h.root} (supervisor pid {supervisor}).")
        raise typer.Exit(0)
    opts = UpOptions(
        sim=sim,
        sim_profile=sim_profile,
        local_model=local_model,
        policy=policy,
        nats_port=nats_port,
        cluster=cluster,
        replicas=replicas,
        config=_config_path(config, h),
    )
    if os.environ.get("AIOS_LLM_CONFIG") and opts.config is None:
        # The llm service's own setting, which `aios up` sets to the catalogue it writes. A catalogue
        # file is a valid aios.toml: say how to use it.
        console.print("AIOS_LLM_CONFIG is not read by `aios up`: pass it as `--config $AIOS_LLM_CONFIG`.")
    cfg = check_options(opts)  # everything validated before anything starts
    left = scan(h)
    if left:  # the last supervisor was killed: its processes hold the data, stop them first
        pids = ", ".join(f"{p.name} {p.pid}" for p in left)
        console.print(f"Stopping processes left by a supervisor that is gone ({pids}).")
        stop_stack(h, say=_say)
    if not detach:
        raise typer.Exit(run_supervisor(h, opts))
    h.state_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "aios_services.cli.main", "supervise", "--home", str(h.root)]
    argv += ["--sim" if sim else "--no-sim", "--sim-profile", sim_profile]
    if policy is not None:
        argv += ["--policy", policy]
    if opts.config is not None:
        argv += ["--config", str(opts.config)]
    if local_model:
        argv.append("--local-model")
    if nats_port:
        argv += ["--nats-port", str(nats_port)]
    if cluster > 1:
        argv += ["--cluster", str(cluster)]
    if replicas > 1:
        argv += ["--replicas", str(replicas)]
    env = {**os.environ, **marker_env(h, "supervisor", "supervisor")}
    with open(h.logs / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env
        )
    try:
        state = _wait_started(h, proc, timeout)
    except KeyboardInterrupt:
        # The stack must not come up behind the user's back: stop what started, ignoring more Ctrl-C.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        console.print("Interrupted: stopping what started.")
        stop_stack(h, say=_say)
        h.state_file.unlink(missing_ok=True)
        raise typer.Exit(130) from None
    if state is None or state.status != "ready":
        why = state.error if state and state.error else "the supervisor exited"
        errors.print(f"[red]AIOS failed to start[/red]: {escape(why)}; see {h.logs}")
        stop_stack(h, say=_say)
        raise typer.Exit(1)
    _print_status(h)
    console.print(f"Config: {cfg.source}. Models: {', '.join(cfg.llm.models)} (see `aios models`).")
    if cfg.agents:
        console.print(f"Agent tokens: {h.agents_dir}/<agent>.token ({', '.join(cfg.agents)}).")


def _wait_started(h: Home, proc: subprocess.Popen[bytes], timeout: float) -> State | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        state = h.read_state()
        if state is not None and state.status in ("ready", "failed"):
            return state
        time.sleep(0.05)
    return h.read_state()


@app.command(hidden=True)
def supervise(
    home: HomeOpt = None,
    config: Annotated[Path | None, typer.Option("--config")] = None,
    local_model: Annotated[bool, typer.Option("--local-model")] = False,
    sim: Annotated[bool, typer.Option("--sim/--no-sim")] = True,
    sim_profile: Annotated[str, typer.Option()] = "fixed",
    policy: Annotated[str | None, typer.Option()] = None,
    nats_port: PortOpt = None,
    cluster: ClusterOpt = 1,
    replicas: ReplicasOpt = 1,
) -> None:
    """Run the supervisor in the foreground (what `aios up --detach` starts)."""
    opts = UpOptions(
        sim=sim,
        sim_profile=sim_profile,
        local_model=local_model,
        policy=policy,
        nats_port=nats_port,
        cluster=cluster,
        replicas=replicas,
        config=config,
    )
    raise typer.Exit(run_supervisor(_home(home), opts))


@app.command()
@one_line_errors
def down(
    home: HomeOpt = None,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait for the supervisor.")] = 60.0,
) -> None:
    """Stop everything `aios up` started in this home, with its supervisor or without it."""
    h = _home(home)
    if not stop_stack(h, timeout, say=_say):
        console.print(f"AIOS is not running in {h.root}.")
    else:
        console.print("AIOS stopped.")
    with contextlib.suppress(OSError):
        h.state_file.unlink(missing_ok=True)


@app.command()
@one_line_errors
def status(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every process of the stack, its pid, address and health."""
    h = _home(home)
    if as_json:
        st = asyncio.run(collect(h))
        print(st.model_dump_json(indent=2))
        raise typer.Exit(0 if st.running else 3)
    raise typer.Exit(_print_status(h))


def _print_status(h: Home) -> int:
    st = asyncio.run(collect(h))
    if not st.running:
        console.print(f"AIOS is not running in {h.root}.")
        if st.processes:
            pids = ", ".join(f"{p.name} {p.pid}" for p in st.processes)
            console.print(f"Its supervisor is gone but processes are left ({pids}): run `aios down`.")
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
    gateway = next((p.address for p in st.processes if p.name == "gateway" and p.address), None)
    with contextlib.suppress(OSError):
        token = (h.root / "console.token").read_text().strip()
        if gateway and token:
            console.print(f"Console: {gateway.removesuffix('/v1')}/ui/?token={token}", soft_wrap=True)
    return 0


def _running_state(h: Home) -> State:
    state = h.read_state()
    if h.lock_holder() is None or state is None:
        console.print(f"AIOS is not running in {h.root}.")
        raise typer.Exit(3)
    return state


@app.command()
@one_line_errors
def models(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds each backend has to answer.")] = 2.0,
) -> None:
    """What the running stack serves: each model, its kind and backends, and whether they answer."""
    from .models import catalogue

    h = _home(home)
    _running_state(h)
    cat = asyncio.run(catalogue(h, timeout=timeout))
    if as_json:
        print(cat.model_dump_json(indent=2))
        return
    table = Table(title=f"AIOS models - {cat.config}")
    for col in ("model", "kind", "backend", "base_url", "slots", "health"):
        table.add_column(col, overflow="fold")
    for m in cat.models:
        for i, b in enumerate(m.backends):
            health = "[green]ok[/green]" if b.healthy else "[red]down[/red]"
            detail = "" if b.detail == "ok" else f" ({escape(b.detail)})"
            backend = b.name if b.model == m.name else f"{b.name} (as {b.model})"
            row = (m.name, m.kind) if i == 0 else ("", "")
            table.add_row(*row, escape(backend), b.base_url, str(b.slots), health + detail)
    console.print(table)


@app.command()
@one_line_errors
def top(
    home: HomeOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One machine-readable snapshot (implies --once).")
    ] = False,
) -> None:
    """Live view of the scheduler: each resource's capacity, running and queued calls, by agent."""
    import nats

    from aios_schemas import AiosError, Namespace

    from .top import fetch_stats, live, render

    h = _home(home)
    state = _running_state(h)
    ns = Namespace(os.environ.get("AIOS_NAMESPACE", ""))
    try:
        if once or as_json:
            st = asyncio.run(fetch_stats(h.bus_url(state), ns))
            if as_json:
                print(st.model_dump_json(indent=2))
            else:
                console.print(render(st))
            return
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(live(h.bus_url(state), ns))
    except (OSError, nats.errors.Error, AiosError) as exc:
        fail(f"cannot read the scheduler's stats: {exc or type(exc).__name__}", code=1)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False
)
def sim(ctx: typer.Context) -> None:
    """Run the LLM engine simulator (OpenAI-compatible HTTP; see `aios sim --help`)."""
    from aios_services.sim.main import main as sim_main

    sim_main(list(ctx.args))


@app.command()
def service(name: Annotated[str, typer.Argument(help="scheduler | llm | storage")]) -> None:
    """Run one kernel service in the foreground (settings from AIOS_* environment variables)."""
    mains = {
        "scheduler": "aios_services.scheduler.main",
        "llm": "aios_services.llm.main",
        "storage": "aios_services.storage.main",
        "access": "aios_services.access.main",
    }
    if name not in mains:
        fail(f"unknown service {name!r}; one of {', '.join(mains)}")
    import importlib

    importlib.import_module(mains[name]).main()


if __name__ == "__main__":
    app()
