"""End to end: an operator's own model served from `aios.toml` (a second simulator stands in for
vLLM), listed by `aios models` and `aios top` before its first call, answered through the SDK; then
the supervisor is killed with SIGKILL: `up` cleans the stale home, `down` stops everything even with
a corrupt state.json."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from aios_sdk import AIOS
from aios_services.cli.home import Home, pid_alive
from aios_services.cli.stack import scan
from aios_services.cli.supervisor import SIM_MODEL
from tests.e2e.helpers import aios, engine, wait_until

pytestmark = pytest.mark.e2e


def status(home: Path) -> dict[str, Any]:
    return json.loads(aios(home, "status", "--json").stdout)  # type: ignore[no-any-return]


def stack_pids(st: dict[str, Any]) -> list[int]:
    return [st["supervisor_pid"], *(p["pid"] for p in st["processes"])]


def test_operator_model_and_a_killed_supervisor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with engine("my-llama", log=tmp_path / "engine.log") as base_url:
        config = tmp_path / "aios.toml"  # beside the home: read without --config
        config.write_text(
            'agents = ["researcher"]\n\n[scheduler]\npolicy = "fifo"\n\n'
            f'[models."my-llama"]\n[[models."my-llama".backends]]\nname = "vllm-a"\n'
            f'base_url = "{base_url}"\nslots = 4\n'
        )
        written = config.read_bytes()
        up = aios(home, "up", "--detach")
        assert up.returncode == 0, up.stdout + up.stderr
        try:
            # `aios models`: the operator's model with its backend, beside the ones `aios up` adds.
            models = aios(home, "models", "--json")
            assert models.returncode == 0, models.stderr
            served = {m["name"]: m for m in json.loads(models.stdout)["models"]}
            assert {SIM_MODEL, "sim-embed", "my-llama"} <= set(served)
            (backend,) = served["my-llama"]["backends"]
            assert (backend["name"], backend["base_url"], backend["slots"]) == ("vllm-a", base_url, 4)
            assert backend["healthy"] and backend["detail"] == "ok", backend

            # `aios top --json` prints one snapshot and exits; the model shows before its first call.
            top = aios(home, "top", "--json", timeout=30)
            assert top.returncode == 0, top.stderr
            idle = {r["name"]: r for r in json.loads(top.stdout)["resources"]}["llm.my-llama"]
            assert (idle["capacity"], idle["running"], idle["queued"]) == (4, 0, 0)

            # The configured agent's token; its call is answered by the operator's engine.
            token = (home / "agents" / "researcher.token").read_text().strip()

            async def chat() -> None:
                async with AIOS.connect(home=home, agent="researcher", token=token) as client:
                    reply = await client.llm.chat(
                        "my-llama", [{"role": "user", "content": "hi"}], max_tokens=8
                    )
                    assert reply.backend == "vllm-a" and reply.content and reply.usage.completion_tokens > 0

            asyncio.run(chat())
            assert httpx.get(base_url.removesuffix("/v1") + "/sim/stats").json()["completed"] == 1
            stats = json.loads(aios(home, "top", "--json", timeout=30).stdout)
            used = {r["name"]: r for r in stats["resources"]}["llm.my-llama"]
            assert used["policy"] == "fifo"  # the file's policy reached the scheduler
            assert {a["agent"] for a in stats["agents"]} == {"researcher"}
            assert config.read_bytes() == written  # the operator's file is never rewritten

            # SIGKILL the supervisor: its processes are left, and `status` says so.
            first = status(home)
            os.kill(first["supervisor_pid"], signal.SIGKILL)
            wait_until("a stale home", lambda: status(home)["status"] == "stale")

            # `up` stops what the dead supervisor left (no second nats-server on the same data).
            up = aios(home, "up", "--detach")
            assert up.returncode == 0, up.stdout + up.stderr
            assert "left by a supervisor that is gone" in up.stdout
            assert not [p for p in stack_pids(first) if pid_alive(p)]
            second = status(home)
            assert second["status"] == "ready" and all(p["healthy"] for p in second["processes"]), second

            # A corrupt state.json does not hide the stack from `down`.
            (home / "state.json").write_text("{corrupt")
        finally:
            down = aios(home, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert "AIOS stopped" in down.stdout
        assert not [p for p in stack_pids(second) if pid_alive(p)], "processes left after aios down"
        assert scan(Home.resolve(home)) == []
        assert not (home / "state.json").exists()
