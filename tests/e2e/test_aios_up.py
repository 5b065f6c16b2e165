"""End to end: `aios up --detach` in a temp home, syscalls through the SDK, status, `aios down`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from aios_sdk import AIOS, NotFound
from aios_services.cli.home import pid_alive
from tests.e2e.helpers import aios

pytestmark = pytest.mark.e2e

# weed names a unix socket after each of its gRPC ports: /tmp/seaweedfs-<kind>-grpc-<port>.sock
SOCKET_KINDS = ("master", "volume", "filer", "s3", "admin")


def test_up_chat_status_down(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = aios(home, "up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        again = aios(home, "up", "--detach")
        assert again.returncode == 0 and "already running" in again.stdout

        st = aios(home, "status", "--json")
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        names = {p["name"]: p for p in status["processes"]}
        # The unix sockets this stack's weed opens (one per gRPC port): none may outlive `down`.
        weed_args = Path(f"/proc/{names['s3']['pid']}/cmdline").read_bytes().split(b"\0")
        ports = [a.split(b"=", 1)[1].decode() for a in weed_args if b"port.grpc=" in a]
        own_sockets = [
            Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock") for port in ports for kind in SOCKET_KINDS
        ]
        assert {"nats", "s3", "sim", "scheduler", "llm", "memory", "storage", "gateway"} <= set(names)
        assert all(p["alive"] and p["healthy"] for p in names.values()), status

        async def chat() -> None:
            async with AIOS.connect(home=home) as client:
                replies = await asyncio.gather(
                    *(
                        client.llm.chat("sim-llama-8b", [{"role": "user", "content": f"hi {i}"}])
                        for i in range(5)
                    )
                )
                assert all(r.content and r.usage.completion_tokens > 0 for r in replies)
                emb = await client.llm.embed("sim-embed", ["hello", "world"])
                assert len(emb.vectors) == 2 and emb.vectors[0] != emb.vectors[1]
                with pytest.raises(NotFound):
                    await client.llm.chat("nope", [{"role": "user", "content": "x"}], timeout=10)
                fact = (await client.memory.add("the e2e stack remembers this")).record
                found = await client.memory.search("stack remembers", k=1)
                assert found.hits[0].record.id == fact.id
                # An unmodified `openai` program, pointed at the gateway with the agent's key.
                gateway = client.conn.gateway_url
                assert gateway and names["gateway"]["address"] == gateway
                oai = AsyncOpenAI(base_url=gateway, api_key=f"local:{client.conn.token}", max_retries=0)
                r = await oai.chat.completions.create(
                    model="sim-llama-8b", messages=[{"role": "user", "content": "via the gateway"}]
                )
                assert r.choices[0].message.content
                await oai.close()

        asyncio.run(chat())

        # The supervisor restarts a service that dies; syscalls work again afterwards.
        llm_pid = names["llm"]["pid"]
        os.kill(llm_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # poll `aios status` (bounded)
            now = {p["name"]: p for p in json.loads(aios(home, "status", "--json").stdout)["processes"]}
            if now["llm"]["restarts"] >= 1 and now["llm"]["healthy"] and now["llm"]["pid"] != llm_pid:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"llm was not restarted: {now['llm']}")
        names["llm"] = now["llm"]
        asyncio.run(chat())

        top = aios(home, "top", "--once", "--json")
        assert top.returncode == 0, top.stdout + top.stderr
        stats = json.loads(top.stdout)
        res = {r["name"]: r for r in stats["resources"]}
        assert res["llm.sim-llama-8b"]["policy"] == "las" and "llm.sim-embed" in res
        assert stats["counters"]["done"] >= 12 and stats["counters"]["failed"] >= 2
        assert {a["agent"] for a in stats["agents"]} == {"local"}
    finally:
        down = aios(home, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    pids = [status["supervisor_pid"]] + [p["pid"] for p in names.values()]
    assert not [p for p in pids if pid_alive(p)], "processes left after aios down"
    assert not (home / "state.json").exists()
    assert ports and not [p for p in own_sockets if p.exists()], "stale weed sockets left"
    st = aios(home, "status", "--json")
    assert st.returncode == 3 and json.loads(st.stdout)["running"] is False
