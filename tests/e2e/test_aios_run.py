"""`aios run` runs an agent program N times under the kernel with progress and a summary; `aios
ps`, `aios logs` and `aios kill` find its runs from another command."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import aios, clean_env

pytestmark = pytest.mark.e2e

PROGRAM = """
async def main(aios, task):
    reply = await aios.llm.chat("sim-llama-8b", [{"role": "user", "content": task}], max_tokens=8)
    return reply.content
"""
SLOW = """
import asyncio
async def main(aios, task):
    await aios.llm.chat("sim-llama-8b", [{"role": "user", "content": task}], max_tokens=4)
    await asyncio.sleep(600)
"""


def test_run_ps_logs_kill(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = aios(home, "up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        (tmp_path / "agent.py").write_text(PROGRAM)
        done = aios(home, "run", str(tmp_path / "agent.py"), "--task", "hello there", "--concurrency", "3")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "3/3 done" in done.stdout and "3 syscalls" in done.stdout
        runs = sorted((home / "runs").iterdir())
        results = [json.loads((runs[0] / f"{i}.json").read_text()) for i in range(3)]
        assert all(r["status"] == "done" and r["calls"] == 1 and r["tokens"] > 0 for r in results)
        listed = aios(home, "ps", "--all")
        assert runs[0].name in listed.stdout
        logs = aios(home, "logs", runs[0].name)
        assert logs.returncode == 0 and '"status": "done"' in logs.stdout
        # An Agent subclass (the tool-using example) runs the same way.
        example = Path(__file__).resolve().parents[2] / "examples" / "tool_agent.py"
        agents = aios(home, "run", str(example), "--task", "What is 2 + 2? [sim:tool=calc]", "-n", "2")
        assert agents.returncode == 0 and "2/2 done" in agents.stdout, agents.stdout + agents.stderr

        # A long run, stopped from another command.
        (tmp_path / "slow.py").write_text(SLOW)
        argv = [sys.executable, "-m", "aios_services.cli.main", "run", str(tmp_path / "slow.py")]
        slow = subprocess.Popen(
            [*argv, "--task", "wait", "-n", "2", "--home", str(home)],
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def slow_run() -> Path | None:
            for p in (home / "runs").iterdir():
                meta = p / "run.json"
                if meta.exists() and json.loads(meta.read_text())["file"].endswith("slow.py"):
                    return p
            return None

        deadline = time.monotonic() + 30
        while True:  # bounded: until `aios ps` shows it running
            found = slow_run()
            if found is not None and found.name in aios(home, "ps").stdout:
                break
            assert time.monotonic() < deadline, "the slow run never showed in aios ps"
            time.sleep(0.2)
        running = [found]
        killed = aios(home, "kill", running[0].name)
        assert killed.returncode == 0 and "stopped 2" in killed.stdout
        assert slow.wait(timeout=30) != 0
        assert running[0].name not in aios(home, "ps").stdout
        assert aios(home, "kill", "nosuchrun").returncode == 2
    finally:
        aios(home, "down")
