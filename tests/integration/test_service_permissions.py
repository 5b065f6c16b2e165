"""Least privilege among the kernel's services too: each logs in as its own NATS user and reaches only
the subjects, streams and buckets it owns or serves (runtime/natsauth.py `service_permissions`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from aios_schemas import Namespace
from aios_services.cli.procs import free_port
from aios_services.runtime.natsauth import Identity, kernel_inbox, new_password, server_config
from tests.servers import nats_server, running


class Login:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc = NATS()

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())

    async def refused(self, subject: str, before: int) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            await self.nc.flush()
            if any("permissions violation" in e and subject.lower() in e for e in self.errors[before:]):
                return True
            await asyncio.sleep(0.02)
        return False


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[tuple[str, Namespace, dict[str, Identity]]]:
    ns = Namespace("t" + uuid.uuid4().hex[:8])
    who = {
        "scheduler": Identity("svc-scheduler", new_password(), "service", ns.name),
        "llm": Identity("svc-llm", new_password(), "service", ns.name),
        "access": Identity("svc-access", new_password(), "service", ns.name),
        "admin": Identity("admin", new_password(), "kernel"),
    }
    conf = tmp_path / "nats.conf"
    conf.write_text(server_config(list(who.values())))

    class Auth:  # what nats_server() needs of a BusAuth
        def __init__(self, conf: Path) -> None:
            self.conf = conf

    spec = nats_server(tmp_path / "nats", free_port(), Auth(conf))  # type: ignore[arg-type]
    server = running(spec, tmp_path / "nats.log")
    srv = await asyncio.to_thread(server.__enter__)
    try:
        yield srv.address, ns, who
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)


async def login(url: str, ident: Identity, service: str) -> Login:
    me = Login()
    await me.nc.connect(
        url,
        user=ident.user,
        password=ident.password,
        inbox_prefix=kernel_inbox(service),
        error_cb=me.on_error,
        allow_reconnect=False,
    )
    return me


async def test_each_service_reaches_only_what_it_owns(
    bus: tuple[str, Namespace, dict[str, Identity]],
) -> None:
    url, ns, who = bus
    admin = await nats.connect(url, user="admin", password=who["admin"].password)
    js = admin.jetstream()
    for bucket in (
        ns.results_bucket,
        ns.limits_bucket,
        ns.contexts_bucket,
        ns.finished_bucket,
        ns.access_bucket,
    ):
        await js.create_key_value(bucket=bucket)
    await (await js.key_value(ns.results_bucket)).put("r1", b"an agent's answer")

    llm = await login(url, who["llm"], "llm")
    kv = await llm.nc.jetstream().key_value(ns.contexts_bucket)  # its own bucket: fine
    await kv.put("s1", b"snapshot")
    limits = await llm.nc.jetstream().key_value(ns.limits_bucket)
    await limits.put("model.m=r1", b"{}")  # its catalogue entry: fine
    refused = [
        ("publish", f"$JS.API.STREAM.INFO.KV_{ns.results_bucket}"),  # results are the scheduler's
        ("publish", f"$KV.{ns.limits_bucket}.usage.agent-1"),  # quotas too
        ("publish", f"{ns.root}.res.agent-1.x"),  # answering an agent is the scheduler's job
        ("publish", f"{ns.root}.evt.syscall.done"),
        ("subscribe", f"{ns.root}.sys.>"),  # agents' syscalls
        ("subscribe", "_INBOX.agent-1.>"),
    ]
    sched = await login(url, who["scheduler"], "scheduler")
    refused_sched = [
        ("publish", f"{ns.root}.stream.agent-1.x"),  # tokens come from the llm only
        ("publish", f"$KV.{ns.contexts_bucket}.s1"),
        ("subscribe", f"{ns.root}.exec.llm"),  # it sends exec requests, it does not take them
        ("publish", f"$KV.{ns.access_bucket}.rule.r1"),  # it reads the rules, it does not write them
    ]
    access = await login(url, who["access"], "access")
    rules = await access.nc.jetstream().key_value(ns.access_bucket)  # its own bucket: fine
    await rules.put("rule.r1", b"{}")
    refused_access = [
        ("publish", f"$JS.API.STREAM.INFO.KV_{ns.results_bucket}"),  # agents' results
        ("publish", f"{ns.root}.sys.agent-1.llm.chat"),  # acting as an agent
        ("publish", f"{ns.root}.exec.llm"),
        ("publish", f"{ns.root}.evt.syscall.done"),  # only audit events are its to tell
        ("publish", "_INBOX.agent-1.x"),  # replies: the operator's inbox only
        ("subscribe", f"{ns.root}.sys.>"),
    ]
    # The llm service may not touch the rules or approvals.
    refused.append(("publish", f"$KV.{ns.access_bucket}.rule.r1"))
    for me, cases in ((llm, refused), (sched, refused_sched), (access, refused_access)):
        for op, subject in cases:
            before = len(me.errors)
            if op == "publish":
                await me.nc.publish(subject, b"x")
            else:
                await me.nc.subscribe(subject)
            assert await me.refused(subject, before), (op, subject, me.errors[before:])
    assert (await (await js.key_value(ns.results_bucket)).get("r1")).value == b"an agent's answer"
    for me in (llm, sched, access):
        await me.nc.close()
    await admin.close()
