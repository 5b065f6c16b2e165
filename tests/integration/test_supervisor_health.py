"""The supervisor restarts a service that is alive but unhealthy for longer than its bound, and
leaves services alone while the bus itself is down (a restart would not help). Real child
processes; their health probes are scripted."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from aios_services.cli.home import Home
from aios_services.cli.procs import Spec
from aios_services.cli.supervisor import Supervisor, UpOptions

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


class Switch:
    """A scripted health probe that counts how often the supervisor asked."""

    def __init__(self, on: bool = True) -> None:
        self.on = on
        self.calls = 0

    async def probe(self) -> bool:
        self.calls += 1
        return self.on


def supervisor(tmp_path: Path) -> Supervisor:
    home = Home(tmp_path / "home")
    home.logs.mkdir(parents=True)
    return Supervisor(home, UpOptions(), unhealthy_restart_s=0.5, health_interval_s=0.1)


async def until(cond: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_service_alive_but_unhealthy_is_restarted(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    bus, svc = Switch(), Switch()
    await sup.spawn(Spec(name="nats", kind="server", argv=SLEEPER, ready=bus.probe))
    await sup.spawn(Spec(name="svc", kind="service", argv=SLEEPER, ready=svc.probe, ready_timeout_s=0))
    child = sup.children[1]
    first = child.proc.pid
    stop = asyncio.Event()
    task = asyncio.create_task(sup.supervise(stop))
    try:
        svc.on = False  # wedged: the process lives on, its health probe fails
        await until(lambda: child.restarts == 1 and child.proc.pid != first)
        svc.on = True
        second, asked = child.proc.pid, svc.calls
        await until(lambda: svc.calls >= asked + 10)  # checked for twice the bound: left alone
        assert child.restarts == 1 and child.proc.pid == second and child.proc.returncode is None
    finally:
        stop.set()
        await task
        await sup._stop_all()


async def test_services_are_left_alone_while_the_bus_is_down(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    bus, svc = Switch(on=False), Switch(on=False)
    await sup.spawn(Spec(name="nats", kind="server", argv=SLEEPER, ready=bus.probe))
    await sup.spawn(Spec(name="svc", kind="service", argv=SLEEPER, ready=svc.probe, ready_timeout_s=0))
    child = sup.children[1]
    stop = asyncio.Event()
    task = asyncio.create_task(sup.supervise(stop))
    try:
        await until(lambda: bus.calls >= 10)  # checked for twice the bound, the bus down all along
        assert child.restarts == 0 and child.unhealthy_since is None and svc.calls == 0
        bus.on = True  # the bus is back and the service still unhealthy: now it counts
        await until(lambda: child.restarts == 1)
    finally:
        stop.set()
        await task
        await sup._stop_all()
