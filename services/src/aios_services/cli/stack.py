"""Find and stop every process of a home, with its supervisor or without it (killed, or a state.json
that cannot be read).

Every process the supervisor starts carries the home in its environment (`AIOS_STACK_HOME`), so
`aios down` finds them by scanning /proc. A pid alone proves nothing (pids are reused): a process
is ours only if its own environment names this home, read at the moment we signal it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .home import Home, pid_alive
from .procs import remove_s3_sockets

STACK_ENV = "AIOS_STACK_HOME"
PROCESS_ENV = "AIOS_STACK_PROCESS"  # "<kind>:<name>", e.g. "server:nats"

# Stop order without a supervisor: what uses the bus before the bus (as the supervisor does).
_ORDER = {"supervisor": 0, "service": 1, "backend": 2, "server": 3}


def marker_env(home: Home, kind: str, name: str) -> dict[str, str]:
    """The environment that makes a process findable as part of `home`'s stack."""
    return {STACK_ENV: str(home.root), PROCESS_ENV: f"{kind}:{name}"}


@dataclass(frozen=True)
class StackProcess:
    pid: int
    kind: str
    name: str
    argv: tuple[str, ...]


def _read_environ(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return None
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _identify(pid: int, home: Home) -> StackProcess | None:
    env = _read_environ(pid)
    if env is None or env.get(STACK_ENV) != str(home.root) or not pid_alive(pid):
        return None
    kind, _, name = env.get(PROCESS_ENV, "server:unknown").partition(":")
    try:
        argv = tuple(
            a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        )
    except OSError:
        return None
    return StackProcess(pid=pid, kind=kind, name=name, argv=argv)


def scan(home: Home) -> list[StackProcess]:
    """Live processes of `home`'s stack (not this process), found by their environment."""
    found = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != me:
            p = _identify(int(entry.name), home)
            if p is not None:
                found.append(p)
    return found


def _signal(p: StackProcess, home: Home, sig: signal.Signals) -> None:
    if _identify(p.pid, home) is None:  # exited since the scan (its pid may be someone else's now)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(p.pid, sig)


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    while time.monotonic() < deadline:
        pids = [p for p in pids if pid_alive(p)]
        if not pids:
            return []
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


def stop_orphans(home: Home, grace_s: float = 10.0, say: Callable[[str], None] = print) -> list[StackProcess]:
    """SIGTERM (then SIGKILL after `grace_s`) every process of the stack, in stop order; scan again
    afterwards, in case a supervisor started more before it stopped."""
    stopped: list[StackProcess] = []
    for _ in range(3):
        procs = scan(home)
        if not procs:
            break
        groups: dict[int, list[StackProcess]] = {}
        for p in procs:
            groups.setdefault(_ORDER.get(p.kind, len(_ORDER)), []).append(p)
        for _, group in sorted(groups.items()):
            group.sort(key=lambda p: p.name != "s3")  # s3 before nats, as the supervisor does
            _stop_group(home, group, grace_s, say)
        stopped += procs
    return stopped


def _stop_group(home: Home, group: list[StackProcess], grace_s: float, say: Callable[[str], None]) -> None:
    for p in group:
        say(f"stopping {p.name} (pid {p.pid})")
        _signal(p, home, signal.SIGTERM)
    left = _wait_gone([p.pid for p in group], time.monotonic() + grace_s)
    for p in group:
        if p.pid in left:
            say(f"{p.name} (pid {p.pid}) did not stop in {grace_s:.0f}s: killing it")
            _signal(p, home, signal.SIGKILL)
    _wait_gone(left, time.monotonic() + 5.0)
    for p in group:
        if p.name == "s3":
            remove_s3_sockets(p.argv)


def stop_stack(home: Home, timeout: float = 60.0, say: Callable[[str], None] = print) -> bool:
    """Stop the stack of `home`: its supervisor if it lives, then whatever is left. True if anything
    was running."""
    supervisor = home.lock_holder()
    if supervisor is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while home.lock_holder() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        holder = home.lock_holder()
        if holder is not None:  # a held lock names its live holder: safe to kill
            say(f"the supervisor (pid {holder}) did not stop in {timeout:.0f}s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder, signal.SIGKILL)
            _wait_gone([holder], time.monotonic() + 5.0)
    left = stop_orphans(home, say=say)
    return supervisor is not None or bool(left)
