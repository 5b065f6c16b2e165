"""End to end: identities, rules and approvals through an `aios up` stack and the operator's CLI. An
agent added at run time logs in at once (nats-server reloaded its users); a rule on its group is
enforced; an approval is granted from the CLI; a revoked agent's next syscall and a fresh connection
both fail `unauthenticated`; agents added survive a restart of the stack; `aios audit` shows it all."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from aios_sdk import AIOS, Forbidden, Unauthenticated
from tests.e2e.helpers import aios

pytestmark = pytest.mark.e2e
MODEL = "sim-llama-8b"
MSGS = [{"role": "user", "content": "hi [sim:tokens=2]"}]


def ok(home: Path, *args: str) -> str:
    r = aios(home, *args)
    assert r.returncode == 0, f"aios {' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout


async def until_forbidden(client: AIOS) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            await client.llm.chat(MODEL, MSGS)
        except Forbidden:
            return
        assert time.monotonic() < deadline, "the rule was not enforced"
        await asyncio.sleep(0.05)


def test_agents_rules_approvals_and_revocation_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = aios(home, "up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        ok(home, "group", "add", "testers", "--description", "e2e")
        token = ok(home, "agent", "add", "bob", "--group", "testers").strip().splitlines()[0]
        assert token.startswith("aios_")
        dup = aios(home, "agent", "add", "bob")
        assert dup.returncode == 1 and "conflict" in dup.stderr
        assert "bob" in ok(home, "agent", "list")

        async def bob_works() -> None:
            async with AIOS.connect(home=home, agent="bob", token=token) as bob:
                await bob.llm.chat(MODEL, MSGS)  # logs in at once: no restart
                ok(home, "rule", "add", "group:testers", "llm.*", "deny", "--id", "no-llm", "--note", "e2e")
                await until_forbidden(bob)
                ok(home, "rule", "rm", "no-llm")

        asyncio.run(bob_works())

        async def approval() -> None:
            async with AIOS.connect(home=home) as local:
                await asyncio.to_thread(
                    ok, home, "rule", "add", "agent:local", "llm.chat", "approve", "--id", "ask"
                )
                ok(home, "rule", "add", "agent:local", "llm.embed", "deny", "--id", "mark")
                await until_embed_denied(local)
                call = asyncio.create_task(local.llm.chat(MODEL, MSGS))
                pending: list[dict[str, object]] = []
                deadline = time.monotonic() + 15
                while not pending:
                    out = await asyncio.to_thread(ok, home, "approvals", "--json")
                    pending = [json.loads(line) for line in out.splitlines() if line.strip()]
                    assert time.monotonic() < deadline
                assert not call.done()
                await asyncio.to_thread(ok, home, "approve", str(pending[0]["id"]))
                await call

        asyncio.run(approval())

        async def revoked() -> None:
            async with AIOS.connect(home=home, agent="bob", token=token) as bob:
                await bob.llm.chat(MODEL, MSGS)
                await asyncio.to_thread(ok, home, "agent", "revoke", "bob")
                with pytest.raises(Unauthenticated):
                    await bob.llm.chat(MODEL, MSGS)
            with pytest.raises(Unauthenticated):
                async with AIOS.connect(home=home, agent="bob", token=token):
                    pass

        asyncio.run(revoked())
        carol = ok(home, "agent", "add", "carol").strip().splitlines()[0]
        events = [json.loads(line) for line in ok(home, "audit", "--json").splitlines() if line.strip()]
        whats = {e["what"] for e in events}
        assert {"agent_added", "agent_revoked", "denied", "approval_requested", "approved"} <= whats, whats
    finally:
        down = aios(home, "down")
    assert down.returncode == 0, down.stdout + down.stderr

    # A restart keeps the agents added (and not the revoked ones).
    up = aios(home, "up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:

        async def after() -> None:
            async with AIOS.connect(home=home, agent="carol", token=carol) as c:
                await c.llm.chat(MODEL, MSGS)
            with pytest.raises(Unauthenticated):
                async with AIOS.connect(home=home, agent="bob", token=token):
                    pass

        asyncio.run(after())
    finally:
        down = aios(home, "down")
    assert down.returncode == 0, down.stdout + down.stderr


async def until_embed_denied(client: AIOS) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            await client.llm.embed(MODEL, ["x"])
        except Forbidden:
            return
        except Exception:
            pass
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
