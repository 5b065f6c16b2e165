"""Processes the benchmarks start: the engine simulator (`aios sim`) and a kernel (`aios up`), each
its own process, as a deployment runs them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx

_AIOS = (sys.executable, "-m", "aios_services.cli.main")
_PREFIX = "AIOS-SIM "


@contextlib.asynccontextmanager
async def sim_host(spec: Mapping[str, tuple[str, Mapping[str, object]]]) -> AsyncIterator[dict[str, str]]:
    """Engine simulators in one process of their own (bench/simhost.py), `name -> (profile, fields)`
    with fields profile overrides (`kv_tokens=...`, `time_scale=...`, `models=(...)`); yields each
    one's root URL (`/v1`, `/sim/stats`, `/metrics` below it) once all answer."""
    payload = {name: {"profile": profile, "fields": dict(fields)} for name, (profile, fields) in spec.items()}
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "bench.simhost", json.dumps(payload)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        urls: dict[str, str] = {}
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            if not line.startswith(_PREFIX):
                err = (await proc.stderr.read()).decode()
                raise RuntimeError(f"the simulators did not start: {line!r} {err[-2000:]}")
            words = line.split()
            if words[1] == "READY":
                break
            urls[words[1]] = words[2]
        yield urls
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


@contextlib.asynccontextmanager
async def sim_process(profile: str, **fields: object) -> AsyncIterator[str]:
    """One simulator (`sim_host` with one engine): its root URL."""
    async with sim_host({"sim": (profile, fields)}) as urls:
        yield urls["sim"]


async def sim_stats(root_url: str) -> dict[str, object]:
    """The simulator's counters (GET /sim/stats), without its log of recent request bodies."""
    async with httpx.AsyncClient() as h:
        stats = (await h.get(root_url + "/sim/stats")).json()
    assert isinstance(stats, dict)
    stats.pop("recent_requests", None)
    return stats


@contextlib.asynccontextmanager
async def aios_stack(
    d: Path, config: str | None, *, policy: str = "las", extra: tuple[str, ...] = ()
) -> AsyncIterator[Path]:
    """`aios up --detach --no-sim` with `config` (if any) as its aios.toml and `extra` arguments
    (e.g. `--local-model`), in a home under `d`; yields the home (`AIOS.connect(home=...)`), and
    `aios down` at the end."""
    home = d / "home"
    args = ["up", "--detach", "--no-sim", "--policy", policy, "--home", str(home), *extra]
    if config is not None:
        path = d / "aios.toml"
        path.write_text(config)
        args += ["--config", str(path)]
    up = await asyncio.create_subprocess_exec(
        *_AIOS,
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await up.communicate()
    if up.returncode:
        raise SystemExit(f"aios up failed: {err.decode()}")
    try:
        yield home
    finally:
        down = await asyncio.create_subprocess_exec(
            *_AIOS, "down", "--home", str(home), stdout=asyncio.subprocess.DEVNULL
        )
        await down.wait()
