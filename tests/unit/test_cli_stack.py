"""The home's processes without a supervisor: the lock names the live supervisor; the environment
marker finds every process of a home and only those; stopping escalates to SIGKILL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aios_services.cli.home import Home, pid_alive
from aios_services.cli.procs import free_port, remove_s3_sockets
from aios_services.cli.stack import marker_env, scan, stop_orphans

# Ignores SIGTERM, then says so: only SIGKILL stops it.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(120)"
)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / ".aios")
    h.prepare()
    return h


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def spawn(procs: list[subprocess.Popen[str]], code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, **env}, stdout=subprocess.PIPE, text=True
    )
    procs.append(p)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    return p


def test_lock_names_the_live_supervisor(home: Home) -> None:
    assert home.lock_holder() is None
    lock = home.lock()
    assert lock is not None
    with lock:
        assert home.lock_holder() == os.getpid()
        assert home.lock(wait_s=0) is None  # a second supervisor is refused
    assert home.lock_holder() is None  # released with the file (the kernel does it on SIGKILL too)


def test_scan_finds_the_home_processes_and_stop_escalates(
    home: Home, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    ready = "print('ready', flush=True); import time; time.sleep(120)"
    service = spawn(procs, ready, marker_env(home, "service", "llm"))
    stubborn = spawn(procs, STUBBORN, marker_env(home, "server", "nats"))
    other_home = spawn(procs, ready, marker_env(Home(tmp_path / "other"), "service", "llm"))
    unmarked = spawn(procs, ready, {})

    found = {p.pid: p for p in scan(home)}
    assert set(found) == {service.pid, stubborn.pid}
    assert (found[service.pid].kind, found[service.pid].name) == ("service", "llm")
    assert (found[stubborn.pid].kind, found[stubborn.pid].name) == ("server", "nats")

    said: list[str] = []
    stopped = stop_orphans(home, grace_s=0.5, say=said.append)
    assert {p.pid for p in stopped} == {service.pid, stubborn.pid}
    assert service.wait(timeout=10) == -15 and stubborn.wait(timeout=10) == -9
    assert any("did not stop" in line and "nats" in line for line in said)
    assert pid_alive(other_home.pid) and pid_alive(unmarked.pid)
    assert scan(home) == []


def test_weed_sockets_of_its_ports_are_removed() -> None:
    ours, other = free_port(), free_port()
    paths = [
        Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock") for kind in ("s3", "filer") for port in (ours, other)
    ]
    for p in paths:
        p.touch()
    try:
        remove_s3_sockets(
            ["weed", "mini", f"-s3.port.grpc={ours}", f"-filer.port={ours}", "-s3.port.iceberg=0"]
        )
        assert [p.exists() for p in paths] == [False, True, False, True]
    finally:
        for p in paths:
            p.unlink(missing_ok=True)
