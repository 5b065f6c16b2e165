"""The agent-side client: `async with AIOS.connect() as aios: await aios.llm.chat(...)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import PubAck
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
    Usage,
    decode_reply,
    encode,
    new_id,
)
from aios_schemas.llm import NamedToolChoice, ResponseFormat
from aios_schemas.wire import validation_error

from . import tracing
from .config import Located, locate, server_urls, without_credentials
from .errors import (
    BackendUnavailable,
    Conflict,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    Unauthenticated,
    error_from_reply,
    typed,
)
from .files import FilesApi
from .memory import MemoryApi
from .tools import ToolsApi

log = logging.getLogger("aios_sdk")

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
# Extra time the client waits past the deadline for the kernel's own deadline_exceeded answer.
_GRACE_S = 2.0
# How long leaving a stream early may take to stop its syscall in the kernel.
_LEAVE_S = 5.0
# A duplicate id that is neither stored nor held yet may be ours, still in the stream: asked for so long.
_DUPLICATE_WAIT_S = 3.0


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
        # Set when the kernel has accepted the syscall (publish ack): from then on it can be cancelled.
        self._accepted = asyncio.Event()
        # Set when the kernel's answer (or a local failure) has arrived: nothing is left to cancel.
        self._ended = False
        self._next_seq = 0

    def _put(self, item: StreamChunk | SyscallResult | BaseException) -> None:
        if isinstance(item, StreamChunk):
            # A run sent again (its worker died) streams again from the start: the agent already
            # has those chunks. Each is delivered once, in order.
            if item.seq < self._next_seq:
                return
            self._next_seq = item.seq + 1
        else:
            self._ended = True
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
    ) -> AsyncIterator[ChatStream]:
        """`async with aios.llm.stream(...) as s: async for delta in s: ...`; then `s.reply`. The
        same parameters as `chat()`; tool calls and the finish reason are in `s.reply`."""
        payload = self._payload(
            model,
            messages,
            True,
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
        async with self.stream_payload(
            payload, timeout=timeout, priority=priority, session=session, id=id
        ) as s:
            yield s

    @asynccontextmanager
    async def stream_payload(
        self,
        payload: LlmChat,
        *,
        timeout: float | None = None,
        priority: int = 0,
        session: str | None = None,
        id: str | None = None,
    ) -> AsyncIterator[ChatStream]:
        """`stream()` for an `LlmChat` built elsewhere (e.g. translated from an OpenAI request)."""
        payload = payload if payload.stream else payload.model_copy(update={"stream": True})
        call, timeout = self._c._prepare(payload, timeout=timeout, priority=priority, session=session, id=id)
        self._c._check_size(call, encode(call), {"Nats-Msg-Id": call.id})  # fail at the call, not later
        stream = ChatStream()
        stream.id = call.id
        task = asyncio.ensure_future(self._c._submit(call, timeout, stream))
        try:
            yield stream
        finally:
            wait = _LEAVE_S  # a syscall that has ended is only unsubscribing: let it finish
            # Left early (a break, or an exception in the block): stop the generation in the kernel so
            # its backend slot is freed, instead of letting it run to the end unread.
            if not task.done() and not stream._ended and not await self._c._abandon(call.id, stream, task):
                wait = 0.0  # the kernel could not be told: stop waiting for its answer
            await _finish(task, wait)


async def _finish(task: asyncio.Future[Any], wait: float) -> None:
    """End a syscall task whose outcome nobody reads: give it `wait` seconds, then cancel it."""
    if not task.done():
        await asyncio.wait({task}, timeout=wait)
    # A cancel landing inside nats-py's own `asyncio.wait_for` can be swallowed on Python 3.11:
    # cancel until the task is really done.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled():
        task.exception()  # retrieved: the error went to the stream's reader, or nobody wants it


async def _close(nc: NATS) -> None:
    """Drain the connection if the bus is there, else just close it: leaving `connect()` while the
    bus is away must not raise."""
    if nc.is_connected:
        with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
            await nc.drain()
    if not nc.is_closed:
        with contextlib.suppress(nats.errors.Error, OSError):
            await nc.close()


def _seconds(value: object, name: str) -> float:
    """A timeout argument, checked here: past this point it becomes a deadline nobody could meet."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"invalid {name}: {value!r} is not a number of seconds")
    if value <= 0:
        raise InvalidRequest(f"invalid {name}: {value!r} must be more than 0 seconds")
    return float(value)


def _headers_size(headers: Mapping[str, str]) -> int:
    """Bytes the headers take in a NATS message (`NATS/1.0` line, one line each, blank line)."""
    return len(b"NATS/1.0\r\n\r\n") + sum(len(f"{k}: {v}\r\n".encode()) for k, v in headers.items())


class _BusWatch:
    """nats-py's callbacks: errors logged in one line (nats-py's default logs a traceback for every
    attempt, several a second), one warning per outage, and a future per outage resolved when the
    connection is back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.last_error: Exception | None = None
        self.live = False  # connected once, not closing: outages are worth a warning
        self._warned = False
        self._next: asyncio.Future[None] | None = None
        self.refused = asyncio.Event()  # the server refused our credentials: retrying cannot help
        self.nc: NATS | None = None  # the connection, once made

    def next(self) -> asyncio.Future[None]:
        if self._next is None or self._next.done():
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    async def on_error(self, exc: Exception) -> None:
        self.last_error = exc
        if "authorization violation" in str(exc).lower():
            self.refused.set()
            if self.live and self.nc is not None and not self.nc.is_connected:
                # Dropped and refused (the agent was revoked): the requests in flight (a syscall's
                # publish waiting for its ack) would wait out their timeout for nothing.
                for fut in list(self.nc._resp_map.values()):
                    if not fut.done():
                        fut.set_exception(
                            Unauthenticated(f"the AIOS bus at {self.url} refuses this agent now")
                        )
        if self.live and not self._warned:
            self._warned = True
            log.warning("AIOS bus %s: %s", self.url, str(exc) or type(exc).__name__)
        else:
            log.debug("AIOS bus %s: %r", self.url, exc)

    async def on_disconnected(self) -> None:
        if self.live:
            log.warning("lost the AIOS bus at %s; reconnecting", self.url)

    async def on_reconnected(self) -> None:
        self._warned = False
        log.info("reconnected to the AIOS bus at %s", self.url)
        if self._next is not None and not self._next.done():
            self._next.set_result(None)


async def _first_connect(where: Located, timeout: float) -> tuple[NATS, _BusWatch]:
    """Connect within `timeout` seconds (retrying meanwhile: the stack may be starting), or raise
    BackendUnavailable saying what was tried and what to do. Reconnects after that are unlimited."""
    conn = where.conn
    url = without_credentials(conn.nats_url)
    watch = _BusWatch(url)
    nc = NATS()
    attempt = asyncio.ensure_future(
        nc.connect(
            servers=server_urls(url),
            # The agent is who NATS authenticates: its name and token are its user and password,
            # and the server's permissions confine it to its own subjects.
            user=conn.agent,
            password=conn.token,
            name=f"aios-sdk-{conn.agent}",
            inbox_prefix=Namespace.inbox_prefix(conn.agent),  # replies only this agent may hear
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,  # type: ignore[arg-type]  # typed int, used as seconds
            connect_timeout=max(0.1, min(timeout, 5.0)),  # type: ignore[arg-type]  # same
            error_cb=watch.on_error,
            disconnected_cb=watch.on_disconnected,
            reconnected_cb=watch.on_reconnected,
        )
    )
    refused = asyncio.ensure_future(watch.refused.wait())
    try:
        await asyncio.wait({attempt, refused}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        refused.cancel()
        if not attempt.done():  # out of time, refused (or the caller was cancelled): stop retrying
            await _finish(attempt, 0.0)
    if not attempt.cancelled() and attempt.exception() is None:
        watch.live = True
        watch.nc = nc
        return nc, watch
    with contextlib.suppress(Exception):  # release what the attempts left; the error says the rest
        await nc.close()
    cause = (None if attempt.cancelled() else attempt.exception()) or watch.last_error
    if watch.refused.is_set() or "authorization violation" in str(cause).lower():
        raise Unauthenticated(
            f"the AIOS bus at {url} refused agent {conn.agent!r}: unknown agent or wrong token"
            f" (from {where.url_from})",
            details={"url": url, "agent": conn.agent},
        ) from cause
    why = f"{cause}" if cause is not None and str(cause) else type(cause).__name__ if cause else "no answer"
    raise BackendUnavailable(
        f"cannot reach the AIOS bus at {url} (from {where.url_from}) within {timeout:g}s "
        f"({why}): {where.unreachable_hint()}",
        details={"url": url, "from": where.url_from},
    ) from cause


def _for_another_request(res: SyscallResult, mine: str) -> bool:
    """A `conflict` answer meant for another request that reused our id (it carries that request's
    digest): not ours to take."""
    return res.request not in (None, mine) and res.error is not None and res.error.code == "conflict"


class _Results:
    """Every result of this client's agent arrives on one wildcard subscription and is handed to
    the call waiting for it: no SUB/UNSUB per syscall (each is a protocol message and a change of
    the server's subscription index). Results for ids nobody here waits for (another process of the
    same agent, a caller that gave up) are dropped."""

    def __init__(self, nc: NATS, subject: str) -> None:
        self._nc = nc
        self._subject = subject
        self._waiting: dict[str, Callable[[Msg], Awaitable[None]]] = {}
        self._sub: asyncio.Future[None] | None = None

    async def watch(self, syscall_id: str, cb: Callable[[Msg], Awaitable[None]]) -> None:
        self._waiting[syscall_id] = cb
        if self._sub is None:
            self._sub = asyncio.ensure_future(self._subscribe())
        try:
            await asyncio.shield(self._sub)
        except BaseException:
            if self._sub.done() and self._sub.exception() is not None:
                self._sub = None  # try again with the next call
            raise

    def forget(self, syscall_id: str) -> None:
        self._waiting.pop(syscall_id, None)

    async def _subscribe(self) -> None:
        await self._nc.subscribe(self._subject, cb=self._route)

    async def _route(self, msg: Msg) -> None:
        cb = self._waiting.get(msg.subject.rsplit(".", 1)[-1])
        if cb is not None:
            await cb(msg)


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
        self.files = FilesApi(self)
        self.memory = MemoryApi(self)
        self.tools = ToolsApi(self)
        self._bus = _BusWatch(conn.nats_url)
        self._background: set[asyncio.Task[None]] = set()  # cancels of abandoned syscalls
        self._results = _Results(nc, self.ns.result(self.agent, "*"))
        self._span_sends: set[asyncio.Task[None]] = set()  # span batches on their way to the bus
        # What this client did (answered syscalls, their errors and tokens): `aios run` reports it.
        self.counts = {"calls": 0, "errors": 0, "tokens": 0}

    @property
    def closed(self) -> bool:
        """The connection is closed for good (left, or the server refused this agent's login)."""
        return bool(self._nc.is_closed)

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
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        traces: bool | None = None,
    ) -> AsyncIterator[AIOS]:
        """Connect using arguments, else AIOS_URL/AIOS_TOKEN/AIOS_AGENT, else the home's file.

        The first connection must succeed within `connect_timeout` seconds, else `BackendUnavailable`
        (saying which URL was tried and where it came from); once connected, outages are ridden out.
        `traces`: export this process's spans to the kernel's recorder (and to OTLP where the
        `OTEL_*` variables say); default on unless `AIOS_TRACES=0`.
        """
        where = locate(home=home, url=url, token=token, agent=agent, namespace=namespace)
        nc, watch = await _first_connect(where, _seconds(connect_timeout, "connect_timeout"))
        client: AIOS | None = None
        route: tracing.Route | None = None
        try:
            client = cls(nc, where.conn, session=session)
            client._bus = watch
            if tracing.enabled(traces):
                route = tracing.Route(
                    client.ns.agent_spans(client.agent), asyncio.get_running_loop(), client._send_spans
                )
                tracing.installed().exporter.add(client.agent, route)
            yield client
        finally:
            if client is not None:
                if route is not None:  # this client's last spans leave before its connection does
                    await tracing.flush()
                    await asyncio.sleep(0)  # the exporter's publish callbacks run
                    tracing.installed().exporter.remove(client.agent, route)
                pending = client._background | client._span_sends
                if pending:  # let pending cancels and spans reach the kernel
                    await asyncio.wait(pending, timeout=_LEAVE_S)
            watch.live = False
            await _close(nc)

    def _send_spans(self, subject: str, data: bytes) -> None:
        """Called on this client's loop by the process's span exporter."""

        async def send() -> None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._nc.publish(subject, data)

        if not self._nc.is_closed:
            task = asyncio.get_running_loop().create_task(send())
            self._span_sends.add(task)
            task.add_done_callback(self._span_sends.discard)

    def _prepare(
        self,
        payload: SyscallPayload,
        *,
        timeout: float | None,
        priority: int,
        session: str | None,
        id: str | None,
    ) -> tuple[Syscall, float]:
        """The envelope of a syscall, validated here so a bad argument fails at the call."""
        timeout = DEFAULT_TIMEOUT_S if timeout is None else _seconds(timeout, "timeout")
        try:
            call = Syscall(
                id=id or new_id(),
                agent=self.agent,
                session=session or self.session,
                payload=payload,
                deadline=time.time() + timeout,
                priority=priority,
            )
        except ValidationError as exc:
            raise typed(validation_error(exc, "syscall")) from exc
        return call, timeout

    def _check_size(self, call: Syscall, data: bytes, headers: Mapping[str, str]) -> None:
        """nats-py raises a bare MaxPayloadError (and the server drops the connection) above the
        server's max_payload: refuse such a syscall with the numbers instead."""
        size, limit = len(data) + _headers_size(headers), self._nc.max_payload
        if size > limit:
            raise InvalidRequest(
                f"syscall {call.id} is {size} bytes, over the bus limit of {limit} bytes "
                "(nats-server max_payload)",
                details={"size": size, "limit": limit},
            )

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
        call, timeout = self._prepare(payload, timeout=timeout, priority=priority, session=session, id=id)
        return await self._submit(call, timeout, stream)

    async def _submit(self, call: Syscall, timeout: float, stream: ChatStream | None) -> ResultPayload:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[SyscallResult] = loop.create_future()

        mine = call.digest()

        async def on_result(msg: Msg) -> None:
            if done.done():
                return
            try:
                res = decode_reply(msg.data, msg.headers, SyscallResult)  # parsed once, here
            except AiosError as exc:
                done.set_exception(exc)
                return
            if not _for_another_request(res, mine):
                done.set_result(res)

        async def on_chunk(msg: Msg) -> None:
            assert stream is not None
            with contextlib.suppress(ValidationError):
                stream._put(StreamChunk.model_validate_json(msg.data))

        with tracing.tracer().start_as_current_span(
            f"syscall {call.kind}", kind=trace.SpanKind.CLIENT
        ) as span:
            span.set_attribute("aios.syscall.id", call.id)
            span.set_attribute("aios.agent", call.agent)
            subs = []
            accepted = False
            try:
                headers: dict[str, str] = {"Nats-Msg-Id": call.id}
                propagate.inject(headers)
                data = encode(call)
                self._check_size(call, data, headers)
                await self._results.watch(call.id, on_result)
                if stream is not None:
                    stream.id = call.id
                    subs.append(await self._nc.subscribe(self.ns.stream(call.agent, call.id), cb=on_chunk))
                self._check_refused()
                ack = await self._publish(call, data, headers, max(2.0, min(timeout, 10.0)))
                accepted = True
                if stream is not None:
                    stream._accepted.set()
                # A duplicate id: the kernel already has this id, maybe answered long ago (its
                # result is not sent again): look in the store first.
                stored = await self._duplicate(call.id, done) if ack.duplicate else None
                res = stored or await self._wait_result(call.id, done, call.deadline or 0.0, timeout)
            except BaseException as exc:
                if stream is not None:
                    stream._put(exc)
                elif accepted and isinstance(exc, asyncio.CancelledError):
                    # The caller gave up (a task cancelled, `asyncio.wait_for` timed out): stop the
                    # syscall in the kernel too, so it does not hold a slot until its deadline.
                    self._cancel_later(call.id)
                raise
            finally:
                self._results.forget(call.id)
                for sub in subs:
                    with contextlib.suppress(nats.errors.Error):
                        await sub.unsubscribe()
            if res.request is not None and res.request != mine:
                # The id answers an earlier, different request (JetStream dropped ours as its
                # duplicate): reusing an id for another request is an error, not a silent replay.
                conflict = Conflict(
                    f"syscall id {call.id} was already used for another request: use a new id",
                    retryable=False,
                )
                if stream is not None:
                    stream._put(conflict)
                raise conflict
            if stream is not None:
                stream._put(res)
            self.counts["calls"] += 1
            if res.error is not None:
                self.counts["errors"] += 1
                raise error_from_reply(res.error)
            assert res.result is not None
            usage = getattr(res.result, "usage", None)
            if isinstance(usage, Usage):
                self.counts["tokens"] += usage.total_tokens
            return res.result

    async def _publish(self, call: Syscall, data: bytes, headers: dict[str, str], within: float) -> PubAck:
        """Publish the syscall until JetStream acks it, within `within` seconds. An attempt whose ack
        does not come (the server it went to died, the stream is electing a leader after a cluster
        node died) is sent again: the same `Nats-Msg-Id`, so JetStream keeps one copy (a second ack
        says `duplicate`, and the result is waited for as usual)."""
        until = time.monotonic() + within
        while True:
            left = until - time.monotonic()
            try:
                return await self._js.publish(
                    self.ns.sys(call.kind, call.agent), data, headers=headers, timeout=min(left, 2.0)
                )
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.js.errors.NoStreamResponseError,  # also while a cluster's stream fails over
                nats.js.errors.ServiceUnavailableError,
            ) as exc:
                self._check_refused(exc)
                if time.monotonic() + 0.05 < until:
                    await asyncio.sleep(0.05)  # a node or a stream leader is failing over: again shortly
                    continue
                if isinstance(exc, nats.js.errors.NoStreamResponseError):
                    raise BackendUnavailable("the AIOS kernel is not running (no syscall stream)") from exc
                raise BackendUnavailable(f"the AIOS kernel did not accept the syscall: {exc}") from exc

    def _check_refused(self, cause: BaseException | None = None) -> None:
        """The bus dropped this agent and now refuses its token (its identity was revoked)."""
        if self._bus.refused.is_set() and not self._nc.is_connected:
            raise Unauthenticated(
                f"the AIOS bus refuses agent {self.agent!r} now: its identity was revoked (or its token"
                " changed)",
                details={"agent": self.agent},
            ) from cause

    def _cancel_later(self, syscall_id: str) -> None:
        """Cancel a syscall in the background (its caller's task is being cancelled right now)."""

        async def cancel() -> None:
            until, delay = time.monotonic() + _LEAVE_S, 0.02
            while time.monotonic() < until:
                try:
                    await self.cancel(syscall_id, timeout=max(0.1, until - time.monotonic()))
                    return
                except NotFound:  # accepted, not yet admitted by the scheduler: ask again shortly
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 0.25)
                except AiosError as exc:
                    log.warning("could not cancel abandoned syscall %s: %s", syscall_id, exc)
                    return

        task = asyncio.ensure_future(cancel())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _abandon(self, syscall_id: str, stream: ChatStream, task: asyncio.Future[Any]) -> bool:
        """Cancel the syscall of a stream its caller left; True once the kernel has stopped it (or it
        has ended), False if it could not be reached (the generation then runs to its deadline)."""
        until = time.monotonic() + _LEAVE_S
        accepted = asyncio.ensure_future(stream._accepted.wait())
        try:  # a syscall still being published can only be cancelled once the kernel has it
            await asyncio.wait({task, accepted}, timeout=_LEAVE_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            accepted.cancel()
        if task.done():
            return True
        if not stream._accepted.is_set():
            log.warning("left the stream of syscall %s before the kernel accepted it", syscall_id)
            return False
        delay = 0.02
        while True:
            try:
                await self.cancel(syscall_id, timeout=max(0.1, until - time.monotonic()))
                return True
            except NotFound as exc:
                # Accepted by JetStream but not yet admitted by the scheduler: ask again shortly.
                if task.done():
                    return True
                if time.monotonic() + delay >= until:
                    log.warning("could not cancel syscall %s after leaving its stream: %s", syscall_id, exc)
                    return False
                await asyncio.wait({task}, timeout=delay)
                delay = min(2 * delay, 0.25)
            except AiosError as exc:
                log.warning("could not cancel syscall %s after leaving its stream: %s", syscall_id, exc)
                return False

    async def _wait_result(
        self, syscall_id: str, done: asyncio.Future[SyscallResult], deadline: float, timeout: float
    ) -> SyscallResult:
        """The result from its subject; after a reconnect (it may have been published while we were
        away) or at the deadline, from the scheduler's store."""
        until = deadline + _GRACE_S
        while True:
            reconnect = self._bus.next()
            waiters: set[asyncio.Future[Any]] = {done, reconnect}
            await asyncio.wait(
                waiters, timeout=max(0.0, until - time.time()), return_when=asyncio.FIRST_COMPLETED
            )
            if done.done():
                return done.result()
            # Past the deadline the store gets what is left of the grace, no more: the caller hears
            # DeadlineExceeded on time also while the bus is away.
            left = until - time.time()
            if self._nc.is_connected:
                with contextlib.suppress(BackendUnavailable, DeadlineExceeded):
                    stored = await self.result(syscall_id, timeout=max(0.2, min(5.0, left)))
                    if stored is not None:
                        return stored
            if time.time() >= until:
                raise DeadlineExceeded(f"no result for {syscall_id} within {timeout:.1f}s")

    async def cancel(self, syscall_id: str, *, timeout: float = 5.0) -> CancelReply:
        """Cancel one of this agent's syscalls, queued or running; its caller gets `Cancelled`."""
        req = _model(CancelRequest, {"id": syscall_id, "agent": self.agent}, "cancel")
        try:
            msg = await self._nc.request(
                self.ns.ctl_for("scheduler", "cancel", self.agent), encode(req), timeout=timeout
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise BackendUnavailable(f"scheduler unreachable: {exc}") from exc
        try:
            return decode_reply(msg.data, msg.headers, CancelReply)
        except AiosError as exc:
            raise typed(exc) from exc

    async def _duplicate(self, syscall_id: str, done: asyncio.Future[SyscallResult]) -> SyscallResult | None:
        """JetStream dropped this publish as a duplicate of an id it saw in its window: the stored
        result of that id (ours), a Conflict (another agent's id), or None to wait for it (ours,
        still running, or not yet taken off the stream: asked again for a few seconds)."""
        delay, until = 0.05, time.monotonic() + _DUPLICATE_WAIT_S
        while not done.done():
            stored, state = await self._stored(syscall_id)
            if stored is not None:
                return stored
            if state == "taken":
                raise Conflict(
                    f"syscall id {syscall_id} is already used by another agent: use a new id", retryable=False
                )
            if state == "pending" or time.monotonic() + delay > until:
                return None
            await asyncio.wait({done}, timeout=delay)
            delay = min(2 * delay, 0.5)
        return None

    async def _stored(self, syscall_id: str, timeout: float = 5.0) -> tuple[SyscallResult | None, str | None]:
        q = _model(ResultQuery, {"id": syscall_id, "agent": self.agent}, "result query")
        try:
            msg = await self._nc.request(
                self.ns.ctl_for("scheduler", "result", self.agent), encode(q), timeout=timeout
            )
        except nats.errors.Error as exc:  # no answer, no scheduler, or the bus is away
            raise BackendUnavailable(f"scheduler unreachable: {exc or type(exc).__name__}") from exc
        try:
            return decode_reply(msg.data, msg.headers, SyscallResult), None
        except AiosError as exc:
            if exc.code == "not_found":
                state = exc.details.get("state")
                return None, state if isinstance(state, str) else None
            raise typed(exc) from exc

    async def result(self, syscall_id: str, *, timeout: float = 5.0) -> SyscallResult | None:
        """The stored result of an earlier syscall of this agent (e.g. after a reconnect), or None."""
        return (await self._stored(syscall_id, timeout))[0]
