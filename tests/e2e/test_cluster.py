"""`aios up --cluster 3`: three nats-server nodes (a JetStream cluster on loopback), every stream and
KV bucket with 3 replicas, every client given every node's URL. One node (the leader of the syscall
stream) is killed with SIGKILL under a steady stream of syscalls: the clients fail over, JetStream
keeps its quorum with two nodes, and every syscall submitted, before, during and after, is answered
with its own result. An agent added meanwhile can log in at each node that is up; `aios down` stops
everything."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import nats
import pytest

from aios_schemas import new_id
from aios_sdk import AIOS
from aios_sdk.config import server_urls
from aios_services.cli.home import Home, pid_alive
from tests.e2e.helpers import aios, wait_until

pytestmark = pytest.mark.e2e

MODEL = "sim-llama-8b"


async def stream_leaders(home: Path) -> dict[str, str]:
    """Each stream's leader (a node's server_name, `aios-N`), read as the operator."""
    nc = await nats.connect(server_urls((home / "operator.url").read_text()), connect_timeout=2)
    try:
        infos = await nc.jetstream().streams_info()
        assert {i.config.num_replicas for i in infos} == {3}, [
            (i.config.name, i.config.num_replicas) for i in infos
        ]
        return {str(i.config.name): str(i.cluster.leader if i.cluster else "") for i in infos}
    finally:
        await nc.close()


async def calls_through_a_node_kill(home: Path, victim_pid: int) -> tuple[int, float]:
    """Syscalls at a steady rate (several in flight) before, across and after the kill; each must be
    answered with its own result. Returns how many were made and the longest one took."""
    answered: dict[str, str | None] = {}
    slowest = 0.0
    async with AIOS.connect(home=home) as client:

        async def call(n: int) -> None:
            nonlocal slowest
            sid, t0 = new_id(), time.monotonic()
            reply = await client.llm.chat(
                MODEL, [{"role": "user", "content": f"call {n}"}], id=sid, timeout=30
            )
            answered[sid] = reply.content
            slowest = max(slowest, time.monotonic() - t0)

        tasks: list[asyncio.Task[None]] = []
        for n in range(90):  # ~4.5 s at 20 calls/s: the kill comes a third of the way in
            if n == 30:
                os.kill(victim_pid, signal.SIGKILL)
            tasks.append(asyncio.create_task(call(n)))
            await asyncio.sleep(0.05)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} of {len(tasks)} syscalls failed: {failed[:3]}"
    assert len(answered) == len(tasks) and all(answered.values())
    return len(tasks), slowest


async def login_at_each_node(home: Path, agent: str, token: str) -> list[str]:
    """The nodes (URLs) where `agent` can log in with `token`, each tried alone."""
    ok = []
    for url in server_urls(json.loads((home / "connection.json").read_text())["nats_url"]):
        try:
            nc = await nats.connect(
                [url],
                user=agent,
                password=token,
                allow_reconnect=False,
                connect_timeout=1,
                max_reconnect_attempts=1,
            )
        except Exception:
            continue
        await nc.close()
        ok.append(url)
    return ok


def test_cluster_survives_a_node_kill(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = aios(home, "up", "--cluster", "3", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        status = json.loads(aios(home, "status", "--json").stdout)
        nodes = {p["name"]: p for p in status["processes"] if p["name"].startswith("nats")}
        assert sorted(nodes) == ["nats-1", "nats-2", "nats-3"]
        assert all(p["healthy"] for p in nodes.values()), nodes
        urls = server_urls(json.loads((home / "connection.json").read_text())["nats_url"])
        assert sorted(urls) == sorted(p["address"] for p in nodes.values())

        # The leader of the syscall stream is the node whose death hurts most: a new one is elected.
        leader = asyncio.run(stream_leaders(home))["AIOS_SYSCALLS"]
        victim = "nats-" + leader.rsplit("-", 1)[1]
        state = Home(home).read_state()
        assert state is not None
        pid = next(p.pid for p in state.processes if p.name == victim)
        made, slowest = asyncio.run(calls_through_a_node_kill(home, pid))
        assert made == 90 and slowest < 30
        assert not pid_alive(pid)

        # Users are shared by the nodes: an agent added now is known to every node that is up.
        added = aios(home, "agent", "add", "bob")
        assert added.returncode == 0, added.stdout + added.stderr
        token = added.stdout.strip().splitlines()[0]
        assert len(asyncio.run(login_at_each_node(home, "bob", token))) >= 2

        # The supervisor restarts the killed node; it rejoins and the cluster is whole again.
        def whole() -> bool:
            st = json.loads(aios(home, "status", "--json").stdout)
            return all(p["healthy"] for p in st["processes"] if p["name"].startswith("nats"))

        wait_until("the killed node to rejoin", whole, timeout=30)
    finally:
        down = aios(home, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (home / "state.json").exists()
    st = json.loads(aios(home, "status", "--json").stdout)
    assert st["status"] == "stopped" and not st["processes"]
