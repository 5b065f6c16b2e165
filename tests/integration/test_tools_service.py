"""The tools service through the kernel, on a real nats-server with real worker processes: schema
validation, timeout kill, crash isolation, memory limit, concurrency limit (the scheduler queues),
output schema, per-agent visibility, tools.list as OpenAI definitions, the flags for the scheduler
in KV, and an external worker answering on plain NATS."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from aios_schemas import AccessRule, ToolEntry, ToolsListReply, encode, new_id, tool_key
from aios_schemas.tools import ToolsInspect
from aios_sdk import (
    ApprovalDenied,
    BackendError,
    Cancelled,
    DeadlineExceeded,
    Forbidden,
    InvalidRequest,
    NotFound,
)
from aios_services.cli.operator import request
from tests.integration.tools_kernel import tools_kernel
from tests.kernel import Kernel

OBJ = {"type": "object"}


def fn(name: str, schema: dict[str, object] | None = None, **extra: object) -> dict[str, object]:
    return {"function": f"tests.tool_funcs:{name}", "input_schema": schema or OBJ, **extra}


TOOLS = {
    "echo": fn(
        "echo",
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["n"],
        },
        description="Echo the arguments.",
    ),
    "sleepy": fn("sleep", timeout_s=0.5),
    "segv": fn("segfault"),
    "quits": fn("exit_now"),
    "raises": fn("fail"),
    "hog": fn("alloc", memory_mb=200),
    "big": fn("big"),
    "liar": fn("wrong_output", output_schema={"type": "object", "properties": {"value": {"type": "number"}}}),
    "held": fn("interval", timeout_s=120),
    "pair": fn("interval", max_concurrency=2, side_effects="reversible"),
    "secret": fn("echo", agents=["agent-2"], side_effects="irreversible"),
    # Flagged for the scheduler, which holds each call for an operator's approval: never called here.
    "guarded": fn("interval", side_effects="irreversible", requires_approval=True),
    "remote": {"worker": "external", "description": "Served elsewhere.", "input_schema": OBJ},
}


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path) -> AsyncIterator[Kernel]:
    async with tools_kernel(nats_url, tmp_path, tool=TOOLS) as k:
        yield k


async def test_list_is_openai_shaped_filtered_and_per_agent(kernel: Kernel) -> None:
    async with kernel.connect("agent-1") as aios:
        listed = await aios.tools.list()
        names = [d.function.name for d in listed.tools]
        assert "calc" in names and "echo" in names and "secret" not in names  # secret: agent-2 only
        assert "web_fetch" not in names  # off unless the operator turns it on
        echo = next(d for d in listed.tools if d.function.name == "echo").model_dump(exclude_none=True)
        assert echo == {
            "type": "function",
            "function": {
                "name": "echo",
                "description": "Echo the arguments.",
                "parameters": TOOLS["echo"]["input_schema"],
            },
        }
        only = await aios.tools.list(["ec*", "calc"])
        assert sorted(d.function.name for d in only.tools) == ["calc", "echo"]
        none = await aios.tools.list(side_effects=["reversible"])
        assert [e.name for e in none.entries] == ["pair"]
        with pytest.raises(NotFound):
            await aios.tools.call("secret", {"n": 1})
    async with kernel.connect("agent-2") as aios:
        entry = next(e for e in (await aios.tools.list(["secret"])).entries)
        assert (entry.side_effects, entry.requires_approval) == ("irreversible", False)
        assert (await aios.tools.call("secret", {"n": 1})).output == {"n": 1}


async def test_the_operator_sees_every_tool(kernel: Kernel) -> None:
    """`aios tools`: ctl.tools.inspect with the kernel's credentials, whoever may call each tool."""
    reply = await request(kernel.nats_url, kernel.ns.ctl("tools", "inspect"), ToolsInspect(), ToolsListReply)
    names = [e.name for e in reply.entries]
    assert {"calc", "secret", "guarded", "remote"} <= set(names) and names == sorted(names)
    only = await request(
        kernel.nats_url, kernel.ns.ctl("tools", "inspect"), ToolsInspect(names=["sec*"]), ToolsListReply
    )
    assert [e.name for e in only.entries] == ["secret"]


async def test_list_leaves_out_what_access_rules_deny(kernel: Kernel) -> None:
    """A rule denying agent-1 `tools.call` on `tools.echo` (as the access service writes it): the
    tool is gone from agent-1's tools.list (never offered to its model) and its call is forbidden."""
    nc = await nats.connect(kernel.nats_url)
    try:
        kv = await nc.jetstream().key_value(kernel.ns.access_bucket)
        rule = AccessRule(
            id="no-echo", who="agent:agent-1", action="tools.call", resource="tools.echo", effect="deny"
        )
        await kv.put("rule.no-echo", encode(rule))
        async with kernel.connect("agent-1") as a1, kernel.connect("agent-2") as a2:
            deadline = time.monotonic() + 10
            while "echo" in [d.function.name for d in (await a1.tools.list()).tools]:
                assert time.monotonic() < deadline, "the rule did not reach the scheduler"
                await asyncio.sleep(0.02)
            listed = await a1.tools.list()
            assert "echo" not in [e.name for e in listed.entries] and "calc" in [
                e.name for e in listed.entries
            ]
            with pytest.raises(Forbidden):
                await a1.tools.call("echo", {"n": 1})
            assert "echo" in [d.function.name for d in (await a2.tools.list()).tools]
    finally:
        await nc.close()


async def test_schema_validation_names_the_field(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        assert (await aios.tools.call("echo", {"n": 3, "tags": ["a"]})).output == {"n": 3, "tags": ["a"]}
        assert (await aios.tools.call("calc", {"expression": "2**100 // 3 + sqrt(16)"})).output == {
            "value": 2**100 // 3 + 4.0
        }
        with pytest.raises(InvalidRequest, match=r"\$\.tags\[1\]") as bad:
            await aios.tools.call("echo", {"n": 1, "tags": ["a", 2]})
        assert bad.value.details["path"] == "$.tags[1]"
        with pytest.raises(InvalidRequest, match="'n' is a required property"):
            await aios.tools.call("echo", {})
        with pytest.raises(InvalidRequest, match=r"\$\.n: -1 is less than the minimum"):
            await aios.tools.call("echo", {"n": -1})
        with pytest.raises(InvalidRequest, match="division by zero"):  # valid by schema, refused by calc
            await aios.tools.call("calc", {"expression": "1/0"})
        with pytest.raises(InvalidRequest, match="not allowed"):  # no names, calls, attributes: no eval
            await aios.tools.call("calc", {"expression": "__import__('os').system('true')"})
        with pytest.raises(InvalidRequest, match="exponent"):
            await aios.tools.call("calc", {"expression": "9**9**9"})
        with pytest.raises(NotFound) as unknown:
            await aios.tools.call("nope", {})
        assert "calc" in unknown.value.details["tools"]  # type: ignore[operator]


async def test_timeout_kills_and_the_service_keeps_serving(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        with pytest.raises(DeadlineExceeded, match=r"timeout of 0\.5s"):
            await aios.tools.call("sleepy", {"seconds": 60})
        assert (await aios.tools.call("calc", {"expression": "6*7"})).output == {"value": 42}
        # The syscall's own deadline, shorter than the tool's timeout, kills the run too.
        with pytest.raises(DeadlineExceeded):
            await aios.tools.call("sleepy", {"seconds": 60}, timeout=0.3)
        assert (await aios.tools.call("echo", {"n": 1})).output == {"n": 1}


async def test_cancel_kills_the_run(kernel: Kernel, tmp_path: Path) -> None:
    """aios.cancel(id) of a running tool call: Cancelled at once, and its worker process is gone."""
    log, never = tmp_path / "held.log", tmp_path / "never"
    async with kernel.connect() as aios:
        call_id = new_id()
        call = asyncio.ensure_future(
            aios.tools.call("held", {"log": str(log), "wait_for": str(never)}, id=call_id)
        )
        deadline = time.monotonic() + 20
        while not (log.exists() and "start" in log.read_text()):
            assert time.monotonic() < deadline, "the run did not start"
            await asyncio.sleep(0.01)
        pid = int(log.read_text().split()[1])
        await aios.cancel(call_id)
        with pytest.raises(Cancelled):
            await call
        while True:  # its worker process was killed (the tool would wait 30 s for the file)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "the cancelled run's worker still runs"
            await asyncio.sleep(0.01)
        assert "end" not in log.read_text()
        assert (await aios.tools.call("calc", {"expression": "1+1"})).output == {"value": 2}


async def test_crashes_are_isolated(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        with pytest.raises(BackendError, match="crashed \\(killed by SIGSEGV\\)"):
            await aios.tools.call("segv", {})
        with pytest.raises(BackendError, match="crashed \\(exited with code 3\\)"):
            await aios.tools.call("quits", {})
        with pytest.raises(BackendError, match="RuntimeError: on purpose"):
            await aios.tools.call("raises", {"message": "on purpose"})
        with pytest.raises(BackendError, match=r"output schema refuses: \$\.value"):
            await aios.tools.call("liar", {})
        with pytest.raises(BackendError, match="over the limit of 1048576"):
            await aios.tools.call("big", {"mb": 2})
        results = await asyncio.gather(*(aios.tools.call("calc", {"expression": f"{i}+1"}) for i in range(5)))
        assert [r.output for r in results] == [{"value": i + 1} for i in range(5)]


async def test_memory_limit(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        with pytest.raises(BackendError, match="memory limit of 200 MB") as err:
            await aios.tools.call("hog", {"mb": 1024})
        assert err.value.details["memory_mb"] == 200
        assert (await aios.tools.call("hog", {"mb": 20})).output == 20 * 1024 * 1024  # under it: fine


async def test_concurrency_limit_queues(kernel: Kernel, tmp_path: Path) -> None:
    """max_concurrency=2, 6 calls at once: they all succeed (queued, not refused), and the tool's own
    start/end marks (appended in order by the worker processes) never show more than 2 running."""
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    async with kernel.connect() as aios:
        calls = [
            asyncio.ensure_future(aios.tools.call("pair", {"log": str(log), "wait_for": str(gate)}))
            for _ in range(6)
        ]
        deadline = time.monotonic() + 20
        while not (log.exists() and log.read_text().count("start") >= 2):  # two are held at the gate
            assert time.monotonic() < deadline, "the first two runs did not start"
            await asyncio.sleep(0.01)
        gate.touch()
        assert [r.output for r in await asyncio.gather(*calls)] == ["done"] * 6
    running = peak = 0
    for line in log.read_text().splitlines():
        running += 1 if line.startswith("start") else -1
        peak = max(peak, running)
    assert peak == 2 and running == 0


async def test_flags_published_for_the_scheduler(kernel: Kernel) -> None:
    nc = await nats.connect(kernel.nats_url)
    try:
        kv = await nc.jetstream().key_value(kernel.ns.limits_bucket)
        entry = ToolEntry.model_validate_json((await kv.get(tool_key("guarded"))).value or b"")
        assert (entry.side_effects, entry.requires_approval, entry.source) == ("irreversible", True, "python")
        calc = ToolEntry.model_validate_json((await kv.get(tool_key("calc"))).value or b"")
        assert (calc.side_effects, calc.requires_approval, calc.source) == ("none", False, "builtin")
        pair = ToolEntry.model_validate_json((await kv.get(tool_key("pair"))).value or b"")
        assert pair.max_concurrency == 2
    finally:
        await nc.close()


async def test_a_flagged_tool_waits_for_approval_and_never_runs_without_it(
    kernel: Kernel, tmp_path: Path
) -> None:
    """requires_approval reaches the scheduler (the tool's catalogue entry): the call is held for an
    operator; with no decision before its deadline it is refused, and the tool never ran."""
    log = tmp_path / "guarded.log"
    async with kernel.connect() as aios:
        with pytest.raises(ApprovalDenied):
            await aios.tools.call("guarded", {"log": str(log)}, timeout=1)
    assert not log.exists()


async def test_external_worker_on_plain_nats(kernel: Kernel) -> None:
    """Any language: subscribe to the tool's subject, answer {"output": ...} or {"error": ...}."""
    nc = await nats.connect(kernel.nats_url)
    seen: list[dict[str, object]] = []

    async def serve(msg: Msg) -> None:
        req = json.loads(msg.data)
        seen.append(req)
        args = req["arguments"]
        if args.get("fail"):
            await msg.respond(json.dumps({"error": {"code": "invalid_request", "message": "no"}}).encode())
        else:
            await msg.respond(json.dumps({"output": {"sum": args["a"] + args["b"]}}).encode())

    await nc.subscribe(f"{kernel.ns.root}.exec.tools.ext.remote", queue="remote", cb=serve)
    await nc.flush()
    try:
        async with kernel.connect() as aios:
            assert (await aios.tools.call("remote", {"a": 2, "b": 5})).output == {"sum": 7}
            with pytest.raises(InvalidRequest, match="no"):
                await aios.tools.call("remote", {"fail": True})
        assert seen[0] == {"tool": "remote", "arguments": {"a": 2, "b": 5}}
    finally:
        await nc.close()
