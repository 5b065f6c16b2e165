"""The agent-side client: `async with AIOS.connect() as aios: await aios.llm.chat(...)`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import propagate, trace
from pydantic import BaseModel, ValidationError

from aios_schemas import (
    AiosError,
    CancelReply,
    CancelRequest,
    ChatMessage,
    ChatReply,
    Connection,
    EmbedReply,
    LlmChat,
    LlmEmbed,
    Namespace,
    ResultPayload,
    ResultQuery,
    StreamChunk,
    Syscall,
    SyscallPayload,
    SyscallResult,
    ToolDef,
    decode_reply,
    encode,
    new_id,
)
from aios_schemas.llm import NamedToolChoice, ResponseFormat
from aios_schemas.wire import validation_error

from .config import resolve_connection
from .errors import BackendUnavailable, DeadlineExceeded, error_from_reply, typed

tracer = trace.get_tracer(__name__)

DEFAULT_TIMEOUT_S = 300.0
# Extra time the client waits past the deadline for the kernel's own deadline_exceeded answer.
_GRACE_S = 2.0


def _model(cls: type[BaseModel], value: object, what: str) -> BaseModel:
    try:
        return value if isinstance(value, cls) else cls.model_validate(value)
    except ValidationError as exc:
        raise typed(validation_error(exc, what)) from exc


class ChatStream:
    """Text deltas of a streaming chat as they are generated; `reply` holds the final answer."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[StreamChunk | SyscallResult | BaseException] = asyncio.Queue()
        self.reply: ChatReply | None = None
        self.id: str = ""

    def _put(self, item: StreamChunk | SyscallResult | BaseException) -> None:
        self._queue.put_nowait(item)

    async def __aiter__(self) -> AsyncIterator[str]:
        text = ""
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, StreamChunk):
                if item.delta:
                    text += item.delta
                    yield item.delta
                continue
            if item.error is not None:
                raise error_from_reply(item.error)
            assert isinstance(item.result, ChatReply)
            self.reply = item.result
            # Chunks are best-effort (core NATS); the result is authoritative: send what was missed.
            final = item.result.content or ""
            if len(final) > len(text) and final.startswith(text):
                yield final[len(text) :]
            return


class LlmApi:
    def __init__(self, client: AIOS) -> None:
        self._c = client

    def _payload(
        self,
        model: str,
        messages: Sequence[ChatMessage | Mapping[str, object]],
        stream: bool,
        tools: Sequence[ToolDef | Mapping[str, object]] | None,
        tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | Mapping[str, object] | None,
        response_format: ResponseFormat | Mapping[str, object] | None,
        params: Mapping[str, object],
    ) -> LlmChat:
        body: dict[str, object] = {
            "model": model,
            "messages": [m.model_dump() if isinstance(m, ChatMessage) else dict(m) for m in messages],
            "stream": stream,
            **{k: v for k, v in params.items() if v is not None},
        }
        if tools is not None:
            body["tools"] = [t.model_dump() if isinstance(t, ToolDef) else dict(t) for t in tools]
        if tool_choice is not None:
            body["tool_choice"] = (
                tool_choice.model_dump() if isinstance(tool_choice, BaseModel) else tool_choice
            )
        if response_format is not None:
            body["response_format"] = (
                response_format.model_dump(by_alias=True)
                if isinstance(response_format, BaseModel)
                else dict(response_format)
            )
        payload = _model(LlmChat, body, "llm.chat payload")
        assert isinstance(payload, LlmChat)
        return payload

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage | Mapping[str, object]],
        *,
        tools: Sequence[ToolDef | Mapping[str, object]] | None = None,
        tool_choice: Literal["none", "auto", "required"]
        | NamedToolChoice
        | Mapping[str, object]
        | None = None,
        response_format: ResponseFormat | Mapping[str, object] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        timeout: float | None = None,
        priority: int = 0,
        session: str | None = None,
        id: str | None = None,
    ) -> ChatReply:
        """One chat completion through the kernel. Raises the typed error of the failure code."""
        payload = self._payload(
            model,
            messages,
            False,
            tools,
            tool_choice,
            response_format,
            {
                "temperature": temperature,
                "top_p": top_p,
                "max_tokens": max_tokens,
                "stop": stop,
                "seed": seed,
            },
        )
        result = await self._c.syscall(payload, timeout=timeout, priority=priority, session=session, id=id)
        assert isinstance(result, ChatReply)
        return result

    async def embed(
        self,
        model: str,
        input: Sequence[str],
        *,
        dimensions: int | None = None,
        timeout: float | None = None,
        priority: int = 0,
        session: str | None = None,
    ) -> EmbedReply:
        """Embeddings of `input` (one vector per text, in order)."""
        body: dict[str, object] = {"model": model, "input": list(input)}
        if dimensions is not None:
            body["dimensions"] = dimensions
        payload = _model(LlmEmbed, body, "llm.embed payload")
        assert isinstance(payload, LlmEmbed)
        result = await self._c.syscall(payload, timeout=timeout, priority=priority, session=session)
        assert isinstance(result, EmbedReply)
        return result

    @asynccontextmanager
    async def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage | Mapping[str, object]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        timeout: float | None = None,
        priority: int = 0,
        session: str | None = None,
        id: str | None = None,
    ) -> AsyncIterator[ChatStream]:
        """`async with aios.llm.stream(...) as s: async for delta in s: ...`; then `s.reply`."""
        payload = self._payload(
            model,
            messages,
            True,
            None,
            None,
            None,
            {
                "temperature": temperature,
                "top_p": top_p,
                "max_tokens": max_tokens,
                "stop": stop,
                "seed": seed,
            },
        )
        stream = ChatStream()
        task = asyncio.ensure_future(
            self._c.syscall(
                payload, timeout=timeout, priority=priority, session=session, stream=stream, id=id
            )
        )
        try:
            yield stream
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, AiosError):
                await task


class _Reconnects:
    """A future per connection outage: resolved when the connection is back."""

    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None

    def next(self) -> asyncio.Future[None]:
        if self._next is None or self._next.done():
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    async def fire(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.set_result(None)


class AIOS:
    """A connection to the AIOS kernel for one agent."""

    def __init__(self, nc: NATS, conn: Connection, *, session: str | None = None) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.conn = conn
        self.ns = Namespace(conn.namespace)
        self.agent = conn.agent
        self.session = session
        self.llm = LlmApi(self)
        self._reconnects = _Reconnects()

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        *,
        home: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        agent: str | None = None,
        session: str | None = None,
        namespace: str | None = None,
    ) -> AsyncIterator[AIOS]:
        """Connect using arguments, else AIOS_URL/AIOS_TOKEN/AIOS_AGENT, else the home's file."""
        conn = resolve_connection(home=home, url=url, token=token, agent=agent, namespace=namespace)
        try:
            reconnects = _Reconnects()
            nc = await nats.connect(
                servers=conn.nats_url.split(","),
                name=f"aios-sdk-{conn.agent}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                connect_timeout=5,
                reconnected_cb=reconnects.fire,
            )
        except (OSError, nats.errors.Error) as exc:
            raise BackendUnavailable(f"cannot reach the AIOS bus at {conn.nats_url}: {exc}") from exc
        try:
            client = cls(nc, conn, session=session)
            client._reconnects = reconnects
            yield client
        finally:
            await nc.drain()

    async def syscall(
        self,
        payload: SyscallPayload,
        *,
        timeout: float | None = None,
        priority: int = 0,
        session: str | None = None,
        stream: ChatStream | None = None,
        id: str | None = None,
    ) -> ResultPayload:
        """Submit a syscall and wait for its result (until its deadline)."""
        timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
        call = Syscall(
            id=id or new_id(),
            agent=self.agent,
            token=self.conn.token,
            session=session or self.session,
            payload=payload,
            deadline=time.time() + timeout,
            priority=priority,
        )
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Msg] = loop.create_future()

        async def on_result(msg: Msg) -> None:
            if not done.done():
                done.set_result(msg)

        async def on_chunk(msg: Msg) -> None:
            assert stream is not None
            with contextlib.suppress(ValidationError):
                stream._put(StreamChunk.model_validate_json(msg.data))

        with tracer.start_as_current_span(f"syscall {call.kind}", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("aios.syscall.id", call.id)
            span.set_attribute("aios.agent", call.agent)
            subs = [await self._nc.subscribe(self.ns.result(call.id), cb=on_result)]
            if stream is not None:
                stream.id = call.id
                subs.append(await self._nc.subscribe(self.ns.stream(call.id), cb=on_chunk))
            try:
                headers: dict[str, str] = {"Nats-Msg-Id": call.id}
                propagate.inject(headers)
                try:
                    await self._js.publish(
                        self.ns.sys(call.kind), encode(call), headers=headers, timeout=min(timeout, 10.0)
                    )
                except nats.js.errors.NoStreamResponseError as exc:
                    raise BackendUnavailable("the AIOS kernel is not running (no syscall stream)") from exc
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                    raise BackendUnavailable(f"the AIOS kernel did not accept the syscall: {exc}") from exc
                res = await self._wait_result(call.id, done, call.deadline or 0.0, timeout)
            except BaseException as exc:
                if stream is not None:
                    stream._put(exc)
                raise
            finally:
                for sub in subs:
                    with contextlib.suppress(nats.errors.Error):
                        await sub.unsubscribe()
            if stream is not None:
                stream._put(res)
            if res.error is not None:
                raise error_from_reply(res.error)
            assert res.result is not None
            return res.result

    async def _wait_result(
        self, syscall_id: str, done: asyncio.Future[Msg], deadline: float, timeout: float
    ) -> SyscallResult:
        """The result from its subject; after a reconnect (it may have been published while we were
        away) or at the deadline, from the scheduler's store."""
        until = deadline + _GRACE_S
        while True:
            reconnect = self._reconnects.next()
            waiters: set[asyncio.Future[Any]] = {done, reconnect}
            await asyncio.wait(
                waiters, timeout=max(0.0, until - time.time()), return_when=asyncio.FIRST_COMPLETED
            )
            if done.done():
                msg = done.result()
                return decode_reply(msg.data, msg.headers, SyscallResult)
            with contextlib.suppress(BackendUnavailable):
                stored = await self.result(syscall_id)
                if stored is not None:
                    return stored
            if time.time() >= until:
                raise DeadlineExceeded(f"no result for {syscall_id} within {timeout:.1f}s")

    async def cancel(self, syscall_id: str, *, timeout: float = 5.0) -> CancelReply:
        """Cancel one of this agent's syscalls, queued or running; its caller gets `Cancelled`."""
        req = CancelRequest(id=syscall_id, agent=self.agent, token=self.conn.token)
        try:
            msg = await self._nc.request(self.ns.ctl("scheduler", "cancel"), encode(req), timeout=timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BackendUnavailable(f"scheduler unreachable: {exc}") from exc
        try:
            return decode_reply(msg.data, msg.headers, CancelReply)
        except AiosError as exc:
            raise typed(exc) from exc

    async def result(self, syscall_id: str, *, timeout: float = 5.0) -> SyscallResult | None:
        """The stored result of an earlier syscall of this agent (e.g. after a reconnect), or None."""
        q = ResultQuery(id=syscall_id, agent=self.agent, token=self.conn.token)
        try:
            msg = await self._nc.request(self.ns.ctl("scheduler", "result"), encode(q), timeout=timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BackendUnavailable(f"scheduler unreachable: {exc}") from exc
        try:
            return decode_reply(msg.data, msg.headers, SyscallResult)
        except AiosError as exc:
            if exc.code == "not_found":
                return None
            raise typed(exc) from exc
