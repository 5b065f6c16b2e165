"""Harness for the llm service tests (no tests here): the real service on the session's nats-server,
driven directly with `ExecRequest`s, as the scheduler drives it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from aios_schemas import (
    ChatReply,
    ContextSnapshot,
    ControlRequest,
    ExecReply,
    ExecRequest,
    LlmChat,
    LlmEmbed,
    Namespace,
    StreamChunk,
    Syscall,
    decode,
    decode_reply,
    encode,
    new_id,
)
from aios_services.cli.procs import service_probe
from aios_services.llm import main as llm_main
from aios_services.llm.settings import LlmSettings
from aios_services.runtime import run_service


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `cond` until it holds, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def chat(content: str, **params: object) -> LlmChat:
    return LlmChat.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": content}], **params}
    )


@dataclass
class Chunks:
    """Every chunk published on one syscall's stream subject, in arrival order."""

    sub: Subscription
    items: list[StreamChunk] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c.delta for c in self.items)

    @property
    def done(self) -> bool:
        return bool(self.items) and self.items[-1].done


@dataclass
class LlmService:
    nc: NATS
    ns: Namespace

    def request(
        self,
        payload: LlmChat | LlmEmbed,
        *,
        id: str | None = None,
        backend: str | None = None,
        deadline_s: float = 15.0,
        **flags: object,
    ) -> ExecRequest:
        sys = Syscall(id=id or new_id(), agent="agent-1", token="t", payload=payload)
        return ExecRequest.model_validate(
            {
                "syscall": sys,
                "resource": f"llm.{payload.model}",
                "deadline": time.time() + deadline_s,
                "backend": backend,
                **flags,
            }
        )

    async def send(self, req: ExecRequest) -> ExecReply:
        msg = await self.nc.request(self.ns.exec("llm"), encode(req), timeout=req.deadline - time.time() + 5)
        return decode_reply(msg.data, msg.headers, ExecReply)

    async def exec(self, payload: LlmChat | LlmEmbed, **kw: object) -> ExecReply:
        return await self.send(self.request(payload, **kw))  # type: ignore[arg-type]

    async def control(self, id: str, action: str) -> None:
        await self.nc.publish(
            self.ns.ctl("llm", "control"), encode(ControlRequest.model_validate({"id": id, "action": action}))
        )
        await self.nc.flush()

    async def chunks(self, id: str) -> Chunks:
        out: Chunks

        async def on_msg(msg: Msg) -> None:
            out.items.append(decode(msg.data, StreamChunk))

        sub = await self.nc.subscribe(self.ns.stream("agent-1", id), cb=on_msg)
        out = Chunks(sub)
        await self.nc.flush()
        return out

    async def snapshot(self, id: str) -> ContextSnapshot | None:
        kv = await self.nc.jetstream().key_value(self.ns.contexts_bucket)
        try:
            entry = await kv.get(id)
        except nats.js.errors.KeyNotFoundError:
            return None
        return decode(entry.value, ContextSnapshot) if entry.value else None


def ok(reply: ExecReply) -> ChatReply:
    """The chat reply of a run that must have succeeded."""
    assert reply.outcome == "done" and reply.result is not None, reply
    assert reply.result.status == "ok", reply.result.error
    assert isinstance(reply.result.result, ChatReply)
    return reply.result.result


@asynccontextmanager
async def llm_service(nats_url: str, tmp_path: Path, config: str) -> AsyncIterator[LlmService]:
    ns = Namespace("t" + uuid.uuid4().hex[:12])
    path = tmp_path / f"llm-{ns.name}.toml"
    path.write_text(config)
    settings = LlmSettings(nats_url=nats_url, namespace=ns.name, llm_config=path, drain_timeout_s=2.0)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_service("llm", settings, lambda bus, st: llm_main.start(bus, st, settings), stop=stop)
    )
    probe = service_probe(nats_url, ns, "llm")
    deadline = time.monotonic() + 10
    while not await probe():
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "llm service did not become healthy"
        await asyncio.sleep(0.01)  # polling interval of the readiness probe
    nc = await nats.connect(nats_url)
    try:
        yield LlmService(nc, ns)
    finally:
        await nc.drain()
        stop.set()
        await task
