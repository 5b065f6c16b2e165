"""The bus wrapper every service uses: connect with reconnect, idempotent streams and buckets,
and `serve()`, which validates a request once and turns every failure into an ErrorReply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from opentelemetry import trace
from pydantic import BaseModel

from aios_schemas import AiosError, Namespace, decode, decode_reply, encode, error_headers
from aios_schemas.wire import clip

from .telemetry import extract, inject

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class Silent(Exception):
    """Raised by a handler that must not answer this request (another subscriber answers it)."""


Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)
Handler = Callable[[Req], Awaitable[Rep]]


async def connect(
    url: str,
    name: str,
    *,
    connect_timeout: float = 5.0,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """Connect with unlimited reconnects: a restarted nats-server must not kill a service."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats %s: %s", name, exc)

    async def on_reconnected() -> None:
        log.info("nats %s: reconnected", name)
        if on_reconnect is not None:
            await on_reconnect()

    return await nats.connect(
        reconnected_cb=on_reconnected,
        servers=[u.strip() for u in url.split(",") if u.strip()],
        name=name,
        connect_timeout=connect_timeout,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        allow_reconnect=True,
        error_cb=on_error,
    )


class Bus:
    """A NATS connection plus the namespace it lives in."""

    def __init__(self, nc: NATS, ns: Namespace) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.ns = ns
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []
        self._streams: dict[str, StreamConfig] = {}
        self._reconnected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, url: str, name: str, ns: Namespace) -> Bus:
        """Connect and wrap: the bus then knows when the connection came back after an outage."""
        holder: list[Bus] = []

        async def on_reconnect() -> None:
            if holder:
                holder[0].reconnected()

        bus = cls(await connect(url, name, on_reconnect=on_reconnect), ns)
        holder.append(bus)
        return bus

    def reconnected(self) -> None:
        """Wake everyone waiting in `next_reconnect()`."""
        fut, self._reconnected = self._reconnected, asyncio.get_running_loop().create_future()
        fut.set_result(None)

    def next_reconnect(self) -> asyncio.Future[None]:
        """Resolves when the connection is re-established after its next outage. Replies addressed
        to us during an outage are lost (our inbox was not subscribed on the server), so a caller
        waiting for one re-sends its request then (the receiver must be idempotent)."""
        return self._reconnected

    # --- JetStream resources --------------------------------------------------------------
    async def ensure_stream(self, config: StreamConfig) -> None:
        """Create the stream, or bring an existing one to this config (remembered, so that a
        stream deleted under a running service can be restored)."""
        assert config.name
        self._streams[config.name] = config
        try:
            await self.js.stream_info(config.name)
        except NotFoundError:
            await self.js.add_stream(config)
        else:
            await self.js.update_stream(config)

    async def restore_stream(self, name: str) -> None:
        """Create again a stream this bus ensured before, which has disappeared."""
        config = self._streams.get(name)
        if config is None:
            raise AiosError("internal", f"stream {name} is gone and this service does not own it")
        await self.ensure_stream(config)

    async def ensure_kv(self, bucket: str, *, ttl_s: float | None = None, history: int = 1) -> KeyValue:
        try:
            return await self.js.key_value(bucket)
        except BucketNotFoundError:
            return await self.js.create_key_value(
                KeyValueConfig(bucket=bucket, ttl=ttl_s, history=history, storage=StorageType.FILE)
            )

    # --- request/reply ---------------------------------------------------------------------
    async def serve(
        self,
        subject: str,
        model: type[Req],
        handler: Callable[[Req], Awaitable[BaseModel]],
        *,
        queue: str = "",
        max_concurrency: int = 256,
    ) -> Subscription:
        """Answer requests on `subject`: validate into `model`, call `handler`, reply with its model.

        Each request runs in its own task (bounded by `max_concurrency`), so one slow call does not
        hold up the subscription. Any exception becomes an ErrorReply; nothing crashes the service.
        """
        sem = asyncio.Semaphore(max_concurrency)

        async def process(msg: Msg) -> None:
            async with sem:
                with tracer.start_as_current_span(
                    f"serve {subject}", context=extract(msg.headers), kind=trace.SpanKind.SERVER
                ):
                    try:
                        body, headers = await self._handle(msg, model, handler)
                    except Silent:
                        return
                    if not msg.reply:
                        return
                    if len(body) > self.nc.max_payload:  # it could never be sent: say so instead
                        log.error("reply on %s of %d bytes exceeds the max payload", subject, len(body))
                        err = AiosError(
                            "internal", f"the reply ({len(body)} bytes) exceeds the bus's max payload"
                        )
                        body, headers = encode(err.to_reply()), error_headers()
                    with contextlib.suppress(nats.errors.Error):  # the caller's deadline tells it
                        await self.nc.publish(msg.reply, body, headers=headers)

        async def on_msg(msg: Msg) -> None:
            self.spawn(process(msg))

        sub = await self.nc.subscribe(subject, queue=queue, cb=on_msg)
        self._subs.append(sub)
        return sub

    @staticmethod
    async def _handle(
        msg: Msg, model: type[Req], handler: Callable[[Req], Awaitable[BaseModel]]
    ) -> tuple[bytes, dict[str, str] | None]:
        try:
            req = decode(msg.data, model)  # invalid_request also for JSON nested too deep, not UTF-8
            return encode(await handler(req)), None
        except AiosError as exc:
            return encode(exc.to_reply()), error_headers()
        except Silent:
            raise
        except Exception as exc:  # the last line of defence (RecursionError too): report, never crash
            log.exception("handler for %s failed", msg.subject)
            err = AiosError("internal", clip(f"{type(exc).__name__}: {exc}", 500))
            return encode(err.to_reply()), error_headers()

    async def request(self, subject: str, msg: BaseModel, reply: type[Rep], *, timeout: float) -> Rep:
        """Request/reply with trace context; an ErrorReply comes back as AiosError."""
        resp = await self.nc.request(subject, encode(msg), timeout=timeout, headers=inject())
        return decode_reply(resp.data, resp.headers, reply)

    async def gather(
        self, subject: str, msg: BaseModel, reply: type[Rep], *, expect: int, timeout: float
    ) -> list[Rep]:
        """Ask every subscriber of `subject` (no queue group) and collect up to `expect` answers
        within `timeout`; error replies and late ones are left out."""
        inbox = self.nc.new_inbox()
        got: list[Rep] = []
        enough = asyncio.Event()

        async def on(m: Msg) -> None:
            with contextlib.suppress(AiosError):
                got.append(decode_reply(m.data, m.headers, reply))
            if len(got) >= expect:
                enough.set()

        sub = await self.nc.subscribe(inbox, cb=on)
        try:
            await self.nc.publish(subject, encode(msg), reply=inbox, headers=inject())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), timeout)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return got[:expect]

    async def publish(self, subject: str, msg: BaseModel, headers: dict[str, str] | None = None) -> None:
        await self.nc.publish(subject, encode(msg), headers=inject(headers))

    # --- lifecycle -------------------------------------------------------------------------
    def spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        """Run `coro` in a task the bus keeps a reference to and waits for on drain."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, timeout: float) -> None:
        """Stop taking requests, finish those in hand (up to `timeout`), then close."""
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        if not self.nc.is_closed:
            # flush + close rather than nc.drain(): drain also waits on pull-consumer inboxes whose
            # fetch loops are already cancelled, and would sit out its whole timeout.
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self.nc.flush(timeout=max(1, int(timeout)))
            await self.nc.close()
