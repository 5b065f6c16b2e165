"""The tools service logged in as its own NATS user (svc-tools, `natsauth.service_permissions`), as
`aios up` runs it, beside a scheduler as svc-scheduler: an agent's tool calls work end to end, the
tool's flags reach KV, an external worker logged in with the tools service's credentials serves its
tool (one declared in the config, one it registers itself and that goes when it stops renewing it),
and svc-tools cannot reach what is not its own."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aios_schemas import AiosError, Namespace, ToolEntry, decode, decode_reply, encode, new_id, tool_key
from aios_schemas.tools import ToolRegister, ToolRegistered
from aios_sdk import AIOS, Cancelled, InvalidRequest, NotFound
from aios_services.cli.procs import service_probe
from aios_services.runtime import run_service
from aios_services.runtime.natsauth import (
    Identity,
    kernel_inbox,
    with_credentials,
)
from aios_services.scheduler import main as sched_main
from aios_services.scheduler.settings import SchedulerSettings
from aios_services.tools import main as tools_main
from aios_services.tools.settings import ToolsSettings
from tests.servers import locked_bus

Bus = tuple[str, Namespace, dict[str, Identity]]


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    async with locked_bus(tmp_path, ("scheduler", "tools")) as b:
        yield b


async def test_tools_as_svc_tools_on_a_locked_bus(bus: Bus, tmp_path: Path) -> None:
    url, ns, who = bus

    def as_(name: str) -> str:
        return with_credentials(url, who[name].user, who[name].password)

    sched = SchedulerSettings(nats_url=as_("scheduler"), namespace=ns.name)  # type: ignore[call-arg]
    tools = ToolsSettings(  # type: ignore[call-arg]
        nats_url=as_("tools"),
        namespace=ns.name,
        tool={
            "remote": {
                "worker": "external",
                "input_schema": {"type": "object"},
                "side_effects": "irreversible",
            },
            "held": {"function": "tests.tool_funcs:interval", "input_schema": {"type": "object"}},
        },
    )
    stops = {"scheduler": asyncio.Event(), "tools": asyncio.Event()}
    starters = {
        "scheduler": lambda: run_service(
            "scheduler", sched, lambda b, s: sched_main.start(b, s, sched), stop=stops["scheduler"]
        ),
        "tools": lambda: run_service(
            "tools", tools, lambda b, s: tools_main.start(b, s, tools), stop=stops["tools"]
        ),
    }
    tasks: list[asyncio.Task[None]] = []
    for name in ("scheduler", "tools"):  # in aios up's order: the scheduler makes the shared buckets
        tasks.append(asyncio.create_task(starters[name]()))
        probe = service_probe(as_("admin"), ns, name)
        deadline = time.monotonic() + 30
        while not await probe():
            assert time.monotonic() < deadline and not any(t.done() for t in tasks), f"{name} did not start"
            await asyncio.sleep(0.05)
    admin = await nats.connect(as_("admin"))
    # The external worker: another process, any language; here a plain NATS client with svc-tools's
    # credentials (it may take exec.tools.> and answer), nothing of the kernel's code.
    worker = await nats.connect(as_("tools"), inbox_prefix=kernel_inbox("tools"))

    async def serve(msg: Msg) -> None:
        args = json.loads(msg.data)["arguments"]
        await msg.respond(json.dumps({"output": {"echo": args}}).encode())

    async def add(msg: Msg) -> None:
        args = json.loads(msg.data)["arguments"]
        await msg.respond(json.dumps({"output": args["a"] + args["b"]}).encode())

    await worker.subscribe(f"{ns.root}.exec.tools.ext.remote", queue="remote", cb=serve)
    await worker.flush()
    try:
        for name in ("scheduler", "tools"):
            probe = service_probe(as_("admin"), ns, name)
            deadline = time.monotonic() + 30
            while not await probe():
                assert time.monotonic() < deadline and not any(t.done() for t in tasks), (
                    f"{name} did not start"
                )
                await asyncio.sleep(0.05)
        async with AIOS.connect(
            url=url, token=who["agent-1"].password, agent="agent-1", namespace=ns.name
        ) as aios:
            assert (await aios.tools.call("calc", {"expression": "2+2"})).output == {"value": 4}
            assert (await aios.tools.call("remote", {"x": 1})).output == {"echo": {"x": 1}}
            # svc-scheduler may tell svc-tools to stop a run: the cancelled call's process goes.
            log, never = tmp_path / "held.log", tmp_path / "never"
            call_id = new_id()
            held = asyncio.ensure_future(
                aios.tools.call("held", {"log": str(log), "wait_for": str(never)}, id=call_id)
            )
            deadline = time.monotonic() + 20
            while not (log.exists() and "start" in log.read_text()):
                assert time.monotonic() < deadline, "the run did not start"
                await asyncio.sleep(0.01)
            await aios.cancel(call_id)
            with pytest.raises(Cancelled):
                await held
            pid = int(log.read_text().split()[1])
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                assert time.monotonic() < deadline, "the cancelled run's worker still runs"
                await asyncio.sleep(0.01)
            # A worker registers a tool of its own (and must renew it: here it does not).
            reg = ToolRegister(
                name="dyn_add",
                description="Add a and b.",
                input_schema={
                    "type": "object",
                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                },
                side_effects="none",
                ttl_s=1,
            )
            await worker.subscribe(f"{ns.root}.exec.tools.ext.dyn_add", queue="dyn", cb=add)
            answer = await worker.request(ns.ctl("tools", "register"), encode(reg), timeout=5)
            assert decode(answer.data, ToolRegistered).expires is not None
            listed = await aios.tools.list(["dyn_add"])
            assert [(e.name, e.source, e.side_effects) for e in listed.entries] == [
                ("dyn_add", "external", "none")
            ]
            assert (await aios.tools.call("dyn_add", {"a": 2, "b": 3})).output == 5
            with pytest.raises(InvalidRequest, match=r"\$\.a"):
                await aios.tools.call("dyn_add", {"a": "x", "b": 3})
            taken = await worker.request(
                ns.ctl("tools", "register"), encode(reg.model_copy(update={"name": "calc"}))
            )
            with pytest.raises(AiosError, match="conflict"):
                decode_reply(taken.data, taken.headers, ToolRegistered)
            deadline = time.monotonic() + 20  # not registered again: it goes
            while (await aios.tools.list(["dyn_add"])).entries:
                assert time.monotonic() < deadline, "the lease did not end"
                await asyncio.sleep(0.1)
            with pytest.raises(NotFound):
                await aios.tools.call("dyn_add", {"a": 2, "b": 3})
        kv = await admin.jetstream().key_value(ns.limits_bucket)
        entry = ToolEntry.model_validate_json((await kv.get(tool_key("remote"))).value or b"")
        assert (entry.source, entry.side_effects) == ("external", "irreversible")

        # What svc-tools may not do: answer agents, speak for the scheduler, read results.
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        svc = NATS()
        await svc.connect(
            url,
            user=who["tools"].user,
            password=who["tools"].password,
            inbox_prefix=kernel_inbox("tools"),
            error_cb=on_error,
            allow_reconnect=False,
        )
        try:
            for subject in (
                f"{ns.root}.res.agent-1.x",
                f"{ns.root}.evt.syscall.done",
                f"$KV.{ns.results_bucket}.x",
            ):
                before = len(errors)
                await svc.publish(subject, b"x")
                deadline = time.monotonic() + 5
                while not any("permissions violation" in e and subject.lower() in e for e in errors[before:]):
                    assert time.monotonic() < deadline, f"svc-tools may publish on {subject}"
                    await svc.flush()
                    await asyncio.sleep(0.02)
        finally:
            await svc.close()
    finally:
        await worker.close()
        await admin.close()
        for ev in stops.values():
            ev.set()
        await asyncio.wait(tasks, timeout=30)
