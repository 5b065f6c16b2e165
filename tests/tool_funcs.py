"""Tool functions for the tools tests, run in the sandbox's worker processes (standard library only)."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path


def echo(**kwargs: object) -> dict[str, object]:
    return dict(kwargs)


def alloc(mb: int) -> int:
    """Allocate (and touch) `mb` megabytes."""
    block = bytearray(mb * 1024 * 1024)
    return len(block)


def big(mb: int) -> str:
    return "x" * (mb * 1024 * 1024)


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def segfault() -> None:
    ctypes.string_at(0)


def exit_now(code: int = 3) -> None:
    os._exit(code)


def fail(message: str) -> None:
    raise RuntimeError(message)


def wrong_output() -> dict[str, object]:
    return {"value": "not a number"}


def interval(log: str, wait_for: str = "", hold_s: float = 0.0) -> str:
    """Append start and end marks (with this worker's pid) to `log`; between them, wait until the
    file `wait_for` exists (the test creates it once it saw the queue fill) or `hold_s` passes."""
    path = Path(log)
    with path.open("a") as f:
        f.write(f"start {os.getpid()} {time.monotonic()}\n")
    deadline = time.monotonic() + 30
    while wait_for and not Path(wait_for).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    if hold_s:
        time.sleep(hold_s)
    with path.open("a") as f:
        f.write(f"end {os.getpid()} {time.monotonic()}\n")
    return "done"
