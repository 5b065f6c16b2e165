"""Identities at run time, on a nats-server of the test's own whose users the access service manages:
an agent added logs in at once; revoked, its open connection's next syscall and any new connection
fail `unauthenticated`, while another agent's connection survives the reload untouched; both changes
are audited. (Real nats-server reloaded by SIGHUP; real scheduler, llm and access services.)"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import nats
import pytest

from aios_schemas import AgentAdd, AgentAdded, AgentInfo, AgentRevoke, AuditEvent, decode_reply, encode
from aios_sdk import AIOS, Unauthenticated
from aios_sdk.config import without_credentials
from aios_services.access import main as access_main
from aios_services.access.settings import AccessSettings
from aios_services.cli.home import Home
from aios_services.cli.procs import free_port, nats_spec
from aios_services.runtime import ServiceSettings
from aios_services.runtime.natsauth import (
    Identity,
    new_password,
    render_users,
    user_entries,
    with_credentials,
)
from aios_services.runtime.service import Starter
from aios_services.sim.runner import SimServer
from tests.integration.conftest import MODEL
from tests.kernel import Kernel, running_kernel
from tests.servers import running

MSGS = [{"role": "user", "content": "hi [sim:tokens=2]"}]


@pytest.fixture
async def own_bus(tmp_path: Path) -> AsyncIterator[tuple[str, Home]]:
    """A nats-server whose config the access service may rewrite: its admin URL and its home."""
    home = Home(tmp_path / "bus")
    home.root.mkdir(parents=True)
    admin = Identity("admin", new_password(), "kernel")
    static = user_entries([admin])
    home.nats_users_file.write_text(json.dumps(static))
    home.nats_config.write_text(render_users(static))
    spec = nats_spec(home, free_port(), free_port(), home.nats_config, home.nats_pid_file)
    server = running(spec, tmp_path / "nats.log")
    srv = await asyncio.to_thread(server.__enter__)
    try:
        yield with_credentials(srv.address, admin.user, admin.password), home
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)


@pytest.fixture
async def kernel(own_bus: tuple[str, Home], tmp_path: Path, sim: SimServer) -> AsyncIterator[Kernel]:
    url, home = own_bus

    def access(common: Mapping[str, str]) -> tuple[ServiceSettings, Starter]:
        s = AccessSettings(
            **common,  # type: ignore[arg-type]
            access_db=tmp_path / "access.duckdb",
            access_nats_config=home.nats_config,
            access_nats_users=home.nats_users_file,
            access_nats_agents=home.nats_agents_file,
            access_nats_pid=home.nats_pid_file,
        )
        return s, lambda bus, st: access_main.start(bus, st, s)

    models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 4}]}
    async with running_kernel(url, tmp_path, models, extra={"access": access}) as k:
        yield k


async def test_added_agent_logs_in_at_once_and_revoked_is_out(kernel: Kernel) -> None:
    op = await nats.connect(kernel.nats_url)
    audit: list[AuditEvent] = []

    async def on_audit(msg: nats.aio.msg.Msg) -> None:
        audit.append(AuditEvent.model_validate_json(msg.data))

    await op.subscribe(kernel.ns.audit("*"), cb=on_audit)

    async def ask(o: str, req: AgentAdd | AgentRevoke, reply: type[AgentAdded] | type[AgentInfo]) -> object:
        msg = await op.request(kernel.ns.ctl("access", o), encode(req), timeout=20)
        return decode_reply(msg.data, msg.headers, reply)

    try:
        eve = await ask("agent_add", AgentAdd(name="eve"), AgentAdded)
        ann = await ask("agent_add", AgentAdd(name="ann"), AgentAdded)
        assert isinstance(eve, AgentAdded) and isinstance(ann, AgentAdded)
        async with (
            AIOS.connect(
                url=without_credentials(kernel.nats_url),
                agent="eve",
                token=eve.token,
                namespace=kernel.ns.name,
            ) as e,
            AIOS.connect(
                url=without_credentials(kernel.nats_url),
                agent="ann",
                token=ann.token,
                namespace=kernel.ns.name,
            ) as a,
        ):
            await e.llm.chat(MODEL, MSGS)
            await a.llm.chat(MODEL, MSGS)
            # eve's token is hers alone: ann cannot log in with it
            with pytest.raises(Unauthenticated):
                async with AIOS.connect(
                    url=without_credentials(kernel.nats_url),
                    agent="ann",
                    token=eve.token,
                    namespace=kernel.ns.name,
                ):
                    pass
            await ask("agent_revoke", AgentRevoke(name="eve"), AgentInfo)
            with pytest.raises(Unauthenticated):
                await e.llm.chat(MODEL, MSGS)
            await a.llm.chat(MODEL, MSGS)  # ann is untouched by the reload
        with pytest.raises(Unauthenticated):
            async with AIOS.connect(
                url=without_credentials(kernel.nats_url),
                agent="eve",
                token=eve.token,
                namespace=kernel.ns.name,
            ):
                pass
        deadline = time.monotonic() + 10
        while {("agent_added", "eve"), ("agent_revoked", "eve")} - {(x.what, x.agent) for x in audit}:
            assert time.monotonic() < deadline, audit
            await asyncio.sleep(0.02)
    finally:
        await op.close()
