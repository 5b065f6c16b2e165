"""The SDK's own tools (files_*, memory_*): a model's tool calls run as the calling agent's own
`files.*` and `memory.*` syscalls, in its own namespace, never another's."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_schemas import FunctionCall, ToolCall
from tests.conftest import S3
from tests.integration.files_kernel import storage_service
from tests.integration.memory_kernel import memory_service
from tests.integration.tools_kernel import tools_service
from tests.kernel import Kernel, running_kernel


def call(id: str, name: str, **arguments: object) -> ToolCall:
    return ToolCall(id=id, function=FunctionCall(name=name, arguments=json.dumps(arguments)))


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path, s3_srv: S3) -> AsyncIterator[Kernel]:
    extra = {
        "memory": memory_service(tmp_path / "memory.duckdb", None, "unused"),
        "storage": storage_service(s3_srv, tmp_path / "storage.duckdb", f"t-{uuid.uuid4().hex[:12]}"),
        "tools": tools_service(),
    }
    async with running_kernel(nats_url, tmp_path, {}, services=("scheduler",), extra=extra) as k:
        yield k


async def test_file_and_memory_tools_are_the_agents_own_syscalls(kernel: Kernel) -> None:
    async with kernel.connect("agent-1") as aios:
        names = {d.function.name for d in await aios.tools.definitions()}
        assert {"calc", "files_read", "files_write", "files_list", "memory_add", "memory_search"} <= names
        out = await aios.tools.run_tool_calls(
            [
                call("w", "files_write", path="notes/a.txt", text="tea is good"),
                call("m", "memory_add", text="Alice prefers tea"),
                call("c", "calc", expression="6*7"),
            ]
        )
        assert [m.tool_call_id for m in out] == ["w", "m", "c"]
        assert json.loads(out[0].content or "") == {"path": "notes/a.txt", "version": 1}
        assert json.loads(out[2].content or "") == {"value": 42}
        # What the tools did is the agent's own: its files and its memory.
        assert await aios.files.read("notes/a.txt") == b"tea is good"
        assert [r.text for r in (await aios.memory.list()).records] == ["Alice prefers tea"]
        more = await aios.tools.run_tool_calls(
            [
                call("r", "files_read", path="notes/a.txt"),
                call("l", "files_list", prefix="notes"),
                call("s", "memory_search", query="what does alice drink", k=1),
                call("x", "files_read", path="../etc/passwd"),
                call("y", "files_read"),
            ]
        )
        got = [json.loads(m.content or "") for m in more]
        assert got[0] == {"text": "tea is good"} and got[1] == {"files": ["notes/a.txt"]}
        assert got[2]["hits"][0]["text"] == "Alice prefers tea"
        assert got[3]["error"]["code"] == "invalid_request" and got[4]["error"]["code"] == "invalid_request"
    async with kernel.connect("agent-2") as aios:  # another agent's tools see its own space only
        out = await aios.tools.run_tool_calls([call("r", "files_read", path="notes/a.txt")])
        assert json.loads(out[0].content or "")["error"]["code"] == "not_found"
        assert (await aios.memory.list()).records == []
