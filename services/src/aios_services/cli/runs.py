"""`aios run`, `aios ps`, `aios logs`, `aios kill`: agent programs run under the kernel.

`aios run FILE --task T --concurrency N` starts N instances of the program (each its own process,
its own program/session for the scheduler) with live progress, then a summary table. Runs are
kept in `$AIOS_HOME/runs/<id>/` (what was run, each instance's pid, log and result), so `aios ps`,
`aios logs` and `aios kill` work from any terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from aios_schemas import new_id
from aios_schemas.envelope import AGENT_PATTERN

from .home import Home, pid_alive

console = Console()
HomeOpt = Annotated[str | None, typer.Option("--home", help="AIOS home (default $AIOS_HOME, else ./.aios).")]


def _runs(h: Home) -> Path:
    return h.root / "runs"


def _instances(run: Path) -> list[dict[str, Any]]:
    meta = json.loads((run / "run.json").read_text())
    out = []
    for i, pid in enumerate(meta["pids"]):
        result = run / f"{i}.json"
        done = json.loads(result.read_text()) if result.exists() else None
        status = done["status"] if done else ("running" if pid_alive(pid) else "killed")
        out.append({"i": i, "pid": pid, "status": status, "result": done, "log": str(run / f"{i}.log")})
    return out


def _table(meta: dict[str, Any], rows: list[dict[str, Any]], now: float) -> Table:
    t = Table(title=f"run {meta['id']}: {Path(meta['file']).name} x{len(rows)}  task: {meta['task'][:60]}")
    for col in ("#", "status", "seconds", "calls", "errors", "tokens", "answer"):
        t.add_column(col, overflow="fold")
    for r in rows:
        res = r["result"] or {}
        secs = res.get("seconds", now - meta["started"])
        answer = str(res.get("answer") if res.get("status") == "done" else res.get("error", ""))[:60]
        t.add_row(
            str(r["i"]),
            r["status"],
            f"{secs:.1f}",
            str(res.get("calls", "")),
            str(res.get("errors", "")),
            str(res.get("tokens", "")),
            answer,
        )
    return t


def run_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The agent program (.py).")],
    task: Annotated[str, typer.Option("--task", help="What each instance is asked to do.")],
    agent: Annotated[
        str | None, typer.Option("--agent", help="Run as this agent (its token in the home).")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-n", min=1, max=10_000)] = 1,
    home: HomeOpt = None,
) -> None:
    """Run an agent program under the kernel, N instances at once, with live progress."""
    h = Home.resolve(home)
    if h.read_state() is None or h.lock_holder() is None:
        console.print(f"AIOS is not running in {h.root}: start it with `aios up --home {h.root}`.")
        raise typer.Exit(3)
    env = {**os.environ, "AIOS_HOME": str(h.root)}
    if agent is not None:
        token = h.agents_dir / f"{agent}.token"
        if not re.match(AGENT_PATTERN, agent) or not token.exists():
            console.print(
                f"no token for agent {agent!r} in {h.agents_dir} (add it: `aios agent add {agent}`)"
            )
            raise typer.Exit(2)
        env.update(AIOS_AGENT=agent, AIOS_TOKEN=token.read_text().strip())
    run_id = new_id()[-12:]
    run = _runs(h) / run_id
    run.mkdir(parents=True)
    meta: dict[str, Any] = {
        "id": run_id,
        "file": str(file.resolve()),
        "task": task,
        "agent": agent,
        "started": time.time(),
        "pids": [],
    }
    procs = []
    for i in range(concurrency):
        argv = [sys.executable, "-m", "aios_services.cli.agent_runner", str(file.resolve()), "--task", task]
        argv += ["--session", f"run-{run_id}-{i}", "--result", str(run / f"{i}.json")]
        with open(run / f"{i}.log", "wb") as log:
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
        meta["pids"].append(procs[-1].pid)
    (run / "run.json").write_text(json.dumps(meta))
    try:
        with Live(_table(meta, _instances(run), time.time()), console=console, refresh_per_second=4) as live:
            while any(p.poll() is None for p in procs):
                time.sleep(0.25)
                live.update(_table(meta, _instances(run), time.time()))
            live.update(_table(meta, _instances(run), time.time()))
    except KeyboardInterrupt:
        _kill(run)
        console.print(f"run {run_id} interrupted: its instances were stopped")
        raise typer.Exit(130) from None
    rows = _instances(run)
    done = sum(1 for r in rows if r["status"] == "done")
    calls = sum((r["result"] or {}).get("calls", 0) for r in rows)
    tokens = sum((r["result"] or {}).get("tokens", 0) for r in rows)
    took = time.time() - meta["started"]
    console.print()
    console.print(
        f"{done}/{len(rows)} done in {took:.1f}s, {calls} syscalls, {tokens} tokens"
        f" (logs: aios logs {run_id})"
    )
    raise typer.Exit(0 if done == len(rows) else 1)


def ps_cmd(home: HomeOpt = None, all_runs: Annotated[bool, typer.Option("--all")] = False) -> None:
    """Agent runs started by `aios run` (those still running, or all with --all)."""
    h = Home.resolve(home)
    table = Table(title="agent runs")
    for col in ("run", "program", "task", "running", "done", "failed", "started"):
        table.add_column(col, overflow="fold")
    root = _runs(h)
    for run in sorted(root.iterdir() if root.exists() else [], key=lambda p: p.stat().st_mtime):
        if not (run / "run.json").exists():
            continue
        meta = json.loads((run / "run.json").read_text())
        rows = _instances(run)
        running = sum(1 for r in rows if r["status"] == "running")
        if not running and not all_runs:
            continue
        table.add_row(
            meta["id"],
            Path(meta["file"]).name,
            meta["task"][:40],
            str(running),
            str(sum(1 for r in rows if r["status"] == "done")),
            str(sum(1 for r in rows if r["status"] not in ("running", "done"))),
            time.strftime("%H:%M:%S", time.localtime(meta["started"])),
        )
    console.print(table)


def logs_cmd(
    run_id: Annotated[str, typer.Argument(help="A run id (aios ps).")],
    instance: Annotated[int | None, typer.Option("--instance", "-i", help="Only this instance.")] = None,
    home: HomeOpt = None,
) -> None:
    """The output of a run's instances."""
    run = _found(Home.resolve(home), run_id)
    for r in _instances(run):
        if instance is None or r["i"] == instance:
            console.rule(f"instance {r['i']} ({r['status']})")
            print(Path(r["log"]).read_text(errors="replace"), end="")


def kill_cmd(
    run_id: Annotated[str, typer.Argument(help="A run id (aios ps).")], home: HomeOpt = None
) -> None:
    """Stop a run's instances (their syscalls in flight are cancelled as their connections close)."""
    stopped = _kill(_found(Home.resolve(home), run_id))
    console.print(f"stopped {stopped} instance(s) of run {run_id}")


def _found(h: Home, run_id: str) -> Path:
    run = _runs(h) / run_id
    if not run_id.isalnum() or not (run / "run.json").exists():
        console.print(f"no run {run_id!r} in {h.root} (see `aios ps --all`)")
        raise typer.Exit(2)
    return run


def _kill(run: Path, grace_s: float = 5.0) -> int:
    alive = [r["pid"] for r in _instances(run) if r["status"] == "running"]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in alive):
        time.sleep(0.05)
    for pid in alive:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, signal.SIGKILL)
    return len(alive)
