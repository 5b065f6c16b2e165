"""What the end-to-end tests share: running the `aios` command, waiting on a condition, a second
simulator standing in for an operator's own engine (vLLM)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aios_services.cli.procs import free_port, sim_spec
from tests.servers import running


def aios(home: Path | None, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`aios ARGS --home HOME` in a clean environment (no AIOS_* variable of the test's own)."""
    return subprocess.run(
        [sys.executable, "-m", "aios_services.cli.main", *args, *(["--home", str(home)] if home else [])],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AIOS_")}


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def engine(*models: str, log: Path) -> Iterator[str]:
    """A simulator serving `models` on a free port (an operator's engine, e.g. vLLM), started as
    `aios up` starts its own; its base URL."""
    with running(sim_spec(free_port(), "fixed", list(models)), log) as server:
        yield server.address
