"""An in-process kernel for integration tests: the real scheduler and llm services, on the real
nats-server of the session, in a fresh uuid namespace, with the given backends."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as NATS

from aios_schemas import Health, HealthQuery, Namespace, decode_reply, encode
from aios_sdk import AIOS
from aios_services.cli.procs import service_probe
from aios_services.llm import main as llm_main
from aios_services.llm.settings import LlmSettings
from aios_services.runtime import ServiceSettings, run_service
from aios_services.runtime.service import Starter
from aios_services.scheduler import main as sched_main
from aios_services.scheduler.settings import SchedulerSettings
from tests.servers import auth_for


@dataclass(frozen=True)
class Kernel:
    nats_url: str  # the kernel's view: admin credentials in it
    ns: Namespace
    root: Path

    @property
    def token(self) -> str:
        """agent-1's token (its NATS password on the test server)."""
        return auth_for(self.nats_url).token("agent-1")

    def connect(self, agent: str = "agent-1", **kw: object) -> AbstractAsyncContextManager[AIOS]:
        """The SDK, as `agent` (NATS authenticates it with its own token, confined to its subjects)."""
        return AIOS.connect(
            url=self.nats_url,
            token=auth_for(self.nats_url).token(agent),
            agent=agent,
            namespace=self.ns.name,
            **kw,  # type: ignore[arg-type]
        )


def toml_value(v: object) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)  # strings, numbers, booleans: JSON and TOML spell them alike


def backend_toml(name: str, base_url: str, **fields: object) -> str:
    """One backend of the llm catalogue, as a TOML inline table."""
    return toml_value({"name": name, "base_url": base_url, **fields})


def model_toml(model: str, *backends: str, kind: str = "chat") -> str:
    """One model of the llm catalogue (a TOML table) with its backends."""
    return (
        f"[models.{json.dumps(model)}]\nkind = {json.dumps(kind)}\nbackends = [\n  "
        + ",\n  ".join(backends)
        + ",\n]\n"
    )


def write_llm_config(path: Path, models: Mapping[str, Sequence[Mapping[str, object]]]) -> None:
    """`models`: name -> backends (dicts of backend fields); a {"kind": ...} entry sets the kind."""
    tables = []
    for model, backends in models.items():
        kind = next((str(b["kind"]) for b in backends if set(b) == {"kind"}), "chat")
        tables.append(
            model_toml(
                model,
                *(toml_value(dict(b)) for b in backends if set(b) != {"kind"}),
                kind=kind,
            )
        )
    path.write_text("\n".join(tables))


# A worker service to run in the kernel too (opt-in): given the common settings (NATS URL, namespace),
# its settings and its starter, e.g. the storage service with its S3 bucket and DuckDB file.
ExtraService = Callable[[Mapping[str, str]], tuple[ServiceSettings, Starter]]


@asynccontextmanager
async def running_kernel(
    nats_url: str,
    root: Path,
    models: Mapping[str, Sequence[Mapping[str, object]]],
    *,
    services: Sequence[str] = ("scheduler", "llm"),
    extra: Mapping[str, ExtraService] | None = None,
    **scheduler_overrides: object,
) -> AsyncIterator[Kernel]:
    ns = Namespace("t" + uuid.uuid4().hex[:12])
    write_llm_config(root / "llm.toml", models)
    common = {"nats_url": nats_url, "namespace": ns.name}
    sched = SchedulerSettings(**common, **scheduler_overrides)  # type: ignore[arg-type]
    llm = LlmSettings(**common, llm_config=root / "llm.toml")  # type: ignore[arg-type]
    starters: dict[str, Starter] = {
        "scheduler": lambda bus, st: sched_main.start(bus, st, sched),
        "llm": lambda bus, st: llm_main.start(bus, st, llm),
    }
    settings: dict[str, ServiceSettings] = {"scheduler": sched, "llm": llm}
    for name, make in (extra or {}).items():
        settings[name], starters[name] = make(common)
    services = [*services, *(extra or {})]
    stops = {name: asyncio.Event() for name in services}
    tasks = {
        name: asyncio.create_task(run_service(name, settings[name], starters[name], stop=stops[name]))
        for name in services
    }
    try:
        for name in services:
            probe = service_probe(nats_url, ns, name)
            for _ in range(200):
                if tasks[name].done():
                    tasks[name].result()  # raise the start failure
                if await probe():
                    break
                await asyncio.sleep(0.02)
            else:
                raise RuntimeError(f"{name} did not become healthy")
        yield Kernel(nats_url=nats_url, ns=ns, root=root)
    finally:
        for ev in stops.values():
            ev.set()
        _, stuck = await asyncio.wait(set(tasks.values()), timeout=30)
        if stuck:  # a service that cannot stop is a bug: show where everything waits
            for task in asyncio.all_tasks():
                task.print_stack(limit=8)
            raise RuntimeError(f"services did not stop: {[n for n, t in tasks.items() if t in stuck]}")


async def replica_health(nc: NATS, ns: Namespace, service: str, replicas: int) -> dict[str, Health]:
    """Every replica of `service` answers a verbose health query: their answers by instance."""
    inbox = nc.new_inbox()
    got: dict[str, Health] = {}
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(ns.ctl(service, "health"), encode(HealthQuery(verbose=True)), reply=inbox)
        deadline = time.monotonic() + 2
        while len(got) < replicas and (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:
                break
            if not msg.data:  # no responders (yet)
                continue
            h = decode_reply(msg.data, msg.headers, Health)
            got[h.instance] = h
    finally:
        await sub.unsubscribe()
    return got


async def serving(nc: NATS, ns: Namespace, service: str, replicas: int) -> dict[str, set[int]]:
    """What each replica of a partitioned service says it serves."""
    out: dict[str, set[int]] = {}
    for instance, h in (await replica_health(nc, ns, service, replicas)).items():
        parts = h.details.get("serving", [])
        assert isinstance(parts, list)
        out[instance] = {int(p) for p in parts if isinstance(p, int)}
    return out


async def until_split(
    nc: NATS, ns: Namespace, service: str, count: int, owners: set[str], timeout: float = 30
) -> dict[str, set[int]]:
    """Wait until exactly `owners` serve every partition between them, each its own."""
    deadline = time.monotonic() + timeout
    while True:
        got = {i: s for i, s in (await serving(nc, ns, service, len(owners))).items() if s}
        every = [p for s in got.values() for p in s]
        if set(got) == owners and sorted(every) == list(range(count)):
            return got
        assert time.monotonic() < deadline, f"partitions not split over {owners}: {got}"
        await asyncio.sleep(0.1)
