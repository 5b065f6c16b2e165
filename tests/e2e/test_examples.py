"""The programs in examples/ run, as their docstrings say, against a stack started by `aios up`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import aios

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(home: Path, name: str, *args: str) -> str:
    env = {**os.environ, "AIOS_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_examples_run_against_aios_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = aios(home, "up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        out = run(home, "many_agents.py", "--agents", "8", "--steps", "2")
        assert "8 agents x 2 steps: 16 calls" in out
        out = run(home, "openai_unchanged.py")
        assert "reply:" in out and "aios trace chatcmpl-" in out and "embedding dimensions:" in out
        for extra in sorted(EXAMPLES.glob("*.py")):
            if extra.name not in ("many_agents.py", "openai_unchanged.py"):
                run(home, extra.name)  # every example runs (tools, agents...), with its defaults
    finally:
        aios(home, "down")
