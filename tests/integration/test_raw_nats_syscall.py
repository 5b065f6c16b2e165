"""A client in any language: syscalls written as JSON by hand and sent over plain NATS (nats-py stands
in for any language's NATS client; no SDK), to a real kernel; replies checked only against the JSON
Schemas `aios schema export` wrote, as such a client would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import nats
import pytest
from nats.aio.client import Client as NATS

from aios_schemas import CONNECTION_FILE, Connection
from tests.kernel import Kernel
from tests.servers import Server, auth_for

AGENT = "agent-1"
MODEL = "sim-llama-8b"  # the conftest kernel's model


@pytest.fixture
def home(kernel: Kernel, nats_srv: Server, tmp_path: Path) -> Path:
    """What `aios up` leaves for clients: connection.json (the bus without credentials, the agent's
    name and token, the namespace)."""
    conn = Connection(
        nats_url=nats_srv.address,
        namespace=kernel.ns.name,
        agent=AGENT,
        token=auth_for(kernel.nats_url).token(AGENT),
    )
    (tmp_path / CONNECTION_FILE).write_text(conn.model_dump_json(indent=2))
    return tmp_path


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The exported JSON Schemas, by the CLI a user runs."""
    out = tmp_path_factory.mktemp("aios-schema")
    aios = Path(sys.executable).with_name("aios")
    subprocess.run(
        [str(aios), "schema", "export", "--out", str(out)], check=True, capture_output=True, timeout=60
    )
    return {p.stem: json.loads(p.read_text()) for p in (out / "schemas").glob("*.json")}


# --- the raw client: only json, uuid, time and a NATS client from here on -------------------------
class RawClient:
    def __init__(self, conn: dict[str, Any], nc: NATS) -> None:
        self.conn, self.nc = conn, nc
        self.agent = conn["agent"]
        self.root = f"{conn['namespace']}.aios.v1" if conn["namespace"] else "aios.v1"

    async def syscall(
        self, kind: str, payload: dict[str, Any], **extra: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Publish one syscall; return the JetStream ack and the result, both as parsed JSON."""
        sid = extra.pop("id", str(uuid.uuid4()))
        body = {
            "id": sid,
            "agent": self.agent,
            "payload": {"kind": kind, **payload},
            "deadline": time.time() + 30,
        }
        result = await self.nc.subscribe(f"{self.root}.res.{self.agent}.{sid}")  # before publishing
        ack = await self.nc.request(
            f"{self.root}.sys.{self.agent}.{kind}",
            json.dumps({**body, **extra}).encode(),
            headers={"Nats-Msg-Id": sid},
            timeout=5,
        )
        msg = await result.next_msg(timeout=30)
        await result.unsubscribe()
        return json.loads(ack.data), json.loads(msg.data)


@pytest.fixture
async def raw(home: Path) -> AsyncIterator[RawClient]:
    conn = json.loads((home / "connection.json").read_text())
    nc = await nats.connect(
        conn["nats_url"],
        user=conn["agent"],
        password=conn["token"],
        inbox_prefix=f"_INBOX.{conn['agent']}",  # the only inbox NATS lets the agent hear
        allow_reconnect=False,
    )
    yield RawClient(conn, nc)
    await nc.close()


HELLO = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 24}


async def test_a_chat_syscall_in_raw_json_gets_a_valid_result(
    raw: RawClient, schemas: dict[str, Any]
) -> None:
    ack, reply = await raw.syscall("llm.chat", HELLO)
    assert ack.get("stream") and ack.get("seq", 0) > 0 and "error" not in ack  # accepted
    jsonschema.validate(reply, schemas["SyscallResult"])
    assert reply["status"] == "ok" and reply["error"] is None
    result = reply["result"]
    jsonschema.validate(result, schemas["ChatReply"])
    assert result["kind"] == "llm.chat" and result["model"] == MODEL and result["content"]
    assert result["usage"]["completion_tokens"] > 0

    # The stored result, by id (after a reconnect, say): request on the agent's own control subject.
    sid = reply["id"]
    query = {"id": sid, "agent": raw.agent}
    msg = await raw.nc.request(
        f"{raw.root}.ctl.scheduler.result.{raw.agent}", json.dumps(query).encode(), timeout=5
    )
    assert not (msg.headers or {}).get("Aios-Error")
    stored = json.loads(msg.data)
    jsonschema.validate(stored, schemas["SyscallResult"])
    assert stored["result"]["content"] == result["content"]


async def test_streamed_tokens_add_up_to_the_reply(raw: RawClient, schemas: dict[str, Any]) -> None:
    sid = str(uuid.uuid4())
    chunks: list[dict[str, Any]] = []
    sub = await raw.nc.subscribe(f"{raw.root}.stream.{raw.agent}.{sid}")
    _, reply = await raw.syscall("llm.chat", {**HELLO, "stream": True}, id=sid)
    while not (chunks and chunks[-1]["done"]):
        chunks.append(json.loads((await sub.next_msg(timeout=10)).data))
    await sub.unsubscribe()
    for chunk in chunks:
        jsonschema.validate(chunk, schemas["StreamChunk"])
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert "".join(c["delta"] for c in chunks) == reply["result"]["content"]


async def test_errors_are_typed_results(raw: RawClient, schemas: dict[str, Any]) -> None:
    _, unknown = await raw.syscall("llm.chat", {**HELLO, "model": "no-such-model"})
    jsonschema.validate(unknown, schemas["SyscallResult"])
    assert unknown["status"] == "error" and unknown["result"] is None
    jsonschema.validate(unknown["error"], schemas["ErrorReply"])
    assert unknown["error"]["code"] == "not_found" and unknown["error"]["retryable"] is False
    assert "no-such-model" in unknown["error"]["message"] and MODEL in unknown["error"]["details"]["models"]

    # A body the schema refuses (no messages, an unknown field) is answered too, never dropped silently.
    _, invalid = await raw.syscall("llm.chat", {"model": MODEL}, surprise=True)
    jsonschema.validate(invalid, schemas["SyscallResult"])
    assert invalid["error"]["code"] == "invalid_request"
    assert invalid["error"]["details"]["error_count"] == 2
    assert not jsonschema.Draft202012Validator(schemas["Syscall"]).is_valid(
        {"id": invalid["id"], "agent": raw.agent, "payload": {"kind": "llm.chat", "model": MODEL}}
    )

    # Another agent's name in the body: refused, and answered to the sender only.
    _, forbidden = await raw.syscall("llm.chat", HELLO, agent="agent-2")
    assert forbidden["error"]["code"] == "forbidden"
