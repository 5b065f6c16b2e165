"""`aios bench SCENARIO [--smoke] [ARGS...]`: run one of the repository's benchmarks (`bench/`, in
a source checkout, not in the installed distributions) with this interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

# Scenario name -> module; `all` is `make bench`.
SCENARIOS = {
    "all": "bench.run",
    "paper": "bench.paper",
    "overhead": "bench.kernel_overhead",
    "rate-sweep": "bench.rate_sweep",
    "many-agents": "bench.many_agents",
    "scheduling": "bench.scheduling",
    "peers": "bench.peers",
    "scale": "bench.scale",
    "real-model": "bench.real_model",
    "gateway": "bench.gateway",
    "memory": "bench.memory_bench",
    "files": "bench.files_bench",
    "tools": "bench.tools_bench",
    "access": "bench.access_bench",
}


def bench_cmd(
    scenario: Annotated[str, typer.Argument(help=f"One of: {', '.join(SCENARIOS)}.")],
    smoke: Annotated[
        bool,
        typer.Option("--smoke", help="The small variant, in seconds (paper, peers, scale)."),
    ] = False,
    args: Annotated[list[str] | None, typer.Argument(help="Passed to the scenario (after --).")] = None,
) -> None:
    """Run a benchmark from the source checkout (the current directory), e.g. `aios bench paper --smoke`."""
    module = SCENARIOS.get(scenario)
    if module is None:
        raise typer.BadParameter(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if not (Path.cwd() / "bench" / "__init__.py").is_file():
        typer.echo("aios bench: the benchmarks are in the source checkout: run it from its root", err=True)
        raise typer.Exit(2)
    argv = [sys.executable, "-m", module, *(["--smoke"] if smoke else []), *(args or [])]
    raise typer.Exit(subprocess.run(argv, check=False).returncode)
