"""The bus wrapper every service uses: connect with reconnect, idempotent streams and buckets,
`serve()`, which validates a request once and turns every failure into an ErrorReply, and a
watchdog that notices a connection that still says "connected" but no longer reads, and revives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import StaleConnectionError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue
from opentelemetry import trace
from pydantic import BaseModel

from aios_schemas import AiosError, Namespace, decode, decode_reply, encode, error_headers
from aios_schemas.wire import clip
from aios_sdk.config import server_urls

from .telemetry import extract, inject

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class Silent(Exception):
    """Raised by a handler that must not answer this request (another subscriber answers it)."""


# A worker not heard from for this long (3 heartbeats) while running a watched request is gone:
# the scheduler's dispatch and a partition's forwarding (partitioned.py) both ask again then.
WORKER_SILENCE_S = 3.0


class WorkerGone(Exception):
    """The worker that took a watched request stopped saying it is working on it (killed,
    partitioned, wedged): ask again (workers are idempotent on what they run)."""


# Watched requests (`Bus.request_watched`): the caller asks for a heartbeat every N seconds, and
# the worker serving it sends an empty message with its name on the reply subject, at once and
# then every N seconds until it answers. A caller that does not ask gets a plain request/reply.
HEARTBEAT_HEADER = "Aios-Heartbeat"
RUNNING_HEADER = "Aios-Running"
# How long a fire-and-forget message waits for another to share a socket write with.
RIDE_LINGER_S = 0.002


Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)
Handler = Callable[[Req], Awaitable[Rep]]


async def connect(
    url: str,
    name: str,
    *,
    connect_timeout: float = 5.0,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    inbox_prefix: str = "_INBOX",
) -> NATS:
    """Connect with unlimited reconnects: a restarted nats-server must not kill a service."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats %s: %s", name, exc)

    async def on_reconnected() -> None:
        log.info("nats %s: reconnected", name)
        if on_reconnect is not None:
            await on_reconnect()

    nc = await nats.connect(
        reconnected_cb=on_reconnected,
        servers=server_urls(url),  # every node of a cluster: nats-py fails over among them
        name=name,
        inbox_prefix=inbox_prefix,  # a service's own replies: its NATS user may hear only those
        connect_timeout=connect_timeout,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        allow_reconnect=True,
        error_cb=on_error,
        # nats-py's own stale-connection check (a PING unanswered twice reconnects): the backstop
        # of the watchdog below, at 10 s rather than its default of 2 minutes.
        ping_interval=10,
        max_outstanding_pings=2,
    )
    guard_headers(nc)
    return nc


def guard_headers(nc: NATS) -> None:
    """Keep one undecodable header block from ending the connection's read loop.

    nats-py (2.16) decodes the status line of a header block outside its own error handling: a
    message whose headers are `NATS/1.0 \\xff\\xfe\\xfd` (nats-server forwards any bytes a publisher
    sends) raises UnicodeDecodeError in the read loop, which then ends while the client still says
    it is connected: the process is deaf. Such a block is taken as no headers (with a warning in
    the log); the watchdog in `Bus.watch_connection` covers any other way the loop dies.
    """
    parse = getattr(nc, "_process_headers", None)
    if parse is None:  # another nats-py: nothing to guard (the watchdog still covers it)
        return

    async def guarded(headers: bytes) -> dict[str, str] | None:
        try:
            result: dict[str, str] | None = await parse(headers)
            return result
        except Exception as exc:
            log.warning("dropped the malformed headers of a message: %r", exc)
            return None

    setattr(nc, "_process_headers", guarded)  # noqa: B010 (an instance attribute over a method)


def _heartbeat_of(msg: Msg) -> float | None:
    """The heartbeat interval a watched request asks for (None: a plain request)."""
    if not msg.reply or not msg.headers:
        return None
    try:
        every = float(msg.headers.get(HEARTBEAT_HEADER, ""))
    except ValueError:
        return None
    return min(max(every, 0.2), 60.0) if every == every else None  # NaN: not asked


class Wedged(Exception):
    """The connection stayed unusable although the server is reachable: restart the process."""


def reading(nc: NATS) -> bool:
    """Whether the client's read and write loops still run (nats-py keeps them as tasks; either
    may end on an unexpected error while the status stays CONNECTED)."""
    for name in ("_reading_task", "_flusher_task"):
        task = getattr(nc, name, None)
        if isinstance(task, asyncio.Task) and task.done():
            return False
    return True


async def force_reconnect(nc: NATS) -> None:
    """Drop the connection and reconnect through nats-py's own path (the one its stale-connection
    check takes), which keeps every subscription, pull consumer and KV watcher of the client."""
    process_op_err = getattr(nc, "_process_op_err", None)
    if process_op_err is None:
        raise Wedged("this nats-py cannot be told to reconnect")
    await process_op_err(StaleConnectionError())


class Bus:
    """A NATS connection plus the namespace it lives in."""

    def __init__(self, nc: NATS, ns: Namespace, *, replicas: int = 1) -> None:
        self.nc = nc
        self.replicas = replicas  # of the streams and buckets it creates (settings.stream_replicas)
        self.given_up: str | None = None
        self.name = str(nc.options.get("name") or "")
        self.js: JetStreamContext = nc.jetstream()
        self.ns = ns
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []
        self._streams: dict[str, StreamConfig] = {}
        self._checks: dict[str, Callable[[], str | None]] = {}
        self.answered_at = time.monotonic()  # the server last answered a PING (watchdog)
        self.wedged_since: float | None = None
        self.forced_reconnects = 0
        # The shared reply inbox of watched requests: token -> that request's queue.
        self._watch_sub: Subscription | None = None
        self._watch_prefix = ""
        self._watch_seq = 0
        self._watched: dict[str, asyncio.Queue[Msg]] = {}
        self._watch_lock = asyncio.Lock()
        self._riders: list[tuple[str, bytes]] = []
        self._rider_timer: asyncio.TimerHandle | None = None
        self._reconnected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls, url: str, name: str, ns: Namespace, *, inbox_prefix: str = "_INBOX", replicas: int = 1
    ) -> Bus:
        """Connect and wrap: the bus then knows when the connection came back after an outage."""
        holder: list[Bus] = []

        async def on_reconnect() -> None:
            if holder:
                holder[0].reconnected()

        nc = await connect(url, name, on_reconnect=on_reconnect, inbox_prefix=inbox_prefix)
        bus = cls(nc, ns, replicas=replicas)
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

    # --- health -------------------------------------------------------------------------
    def give_up(self, reason: str) -> None:
        """This process must stop serving (e.g. another replica took its lease): within a second the
        watchdog ends the service, which exits to be restarted (`Wedged`)."""
        log.error("giving up: %s", reason)
        self.given_up = reason

    def add_check(self, name: str, check: Callable[[], str | None]) -> None:
        """Part of this service's health: `check()` says what is wrong (None when all is well)."""
        self._checks[name] = check

    def problems(self) -> list[str]:
        """Why this service is not doing its job now (empty: healthy)."""
        out: list[str] = []
        nc = self.nc
        if nc.is_closed:
            out.append("nats: connection closed")
        elif not nc.is_connected:
            out.append("nats: reconnecting")
        elif not reading(nc):
            out.append("nats: connection wedged (its read loop ended)")
        elif self.wedged_since is not None:
            out.append(f"nats: no answer to PING for {time.monotonic() - self.wedged_since:.0f}s")
        for name, check in list(self._checks.items()):
            try:
                problem = check()
            except Exception as exc:
                problem = f"check failed: {exc!r}"
            if problem:
                out.append(f"{name}: {problem}")
        return out

    async def watch_connection(
        self, *, interval_s: float = 1.0, ping_timeout_s: float = 2.0, give_up_s: float = 30.0
    ) -> None:
        """Forever: every `interval_s`, check the client still reads and the server answers a PING.
        A connection that says "connected" but does not (its read loop ended, or two PINGs in a row
        unanswered) is dropped and re-established in place. Raises Wedged if it stays so for
        `give_up_s`: the process should exit (non-zero) and be restarted. A server that is down is
        not a wedge: nats-py reconnects by itself, and a restart would not help."""
        missed = 0
        while True:
            await asyncio.sleep(interval_s)
            if self.given_up is not None:
                raise Wedged(self.given_up)
            nc = self.nc
            if nc.is_closed or not nc.is_connected:
                self.wedged_since, missed = None, 0
                continue
            now = time.monotonic()
            alive = reading(nc)
            if alive:
                try:
                    await nc.flush(timeout=max(1, round(ping_timeout_s)))
                    self.answered_at, self.wedged_since, missed = time.monotonic(), None, 0
                    continue
                except (nats.errors.Error, TimeoutError):
                    if not nc.is_connected:  # it went down meanwhile: nats-py is on it
                        continue
                    missed += 1
                    if missed < 2:  # one slow answer (a busy loop) is not a wedge yet
                        continue
            if self.wedged_since is None:
                self.wedged_since = now
            elif now - self.wedged_since >= give_up_s:
                raise Wedged(f"nats connection unusable for {now - self.wedged_since:.0f}s")
            why = "its read loop ended" if not alive else f"{missed} PINGs unanswered"
            server = nc.connected_url
            where = f"{server.hostname}:{server.port}" if server else "?"  # not the credentials
            log.error("nats connection to %s wedged (%s): reconnecting", where, why)
            self.forced_reconnects += 1
            missed = 0
            try:
                await force_reconnect(nc)
            except Wedged:
                raise
            except Exception:
                log.exception("forcing a reconnect failed")

    # --- JetStream resources --------------------------------------------------------------
    async def ensure_stream(self, config: StreamConfig) -> None:
        """Create the stream, or bring an existing one to this config (remembered, so that a
        stream deleted under a running service can be restored). A config that names no replicas
        gets the bus's (an existing stream's are raised by the update: JetStream adds the peers)."""
        if config.num_replicas is None:
            config = replace(config, num_replicas=self.replicas)
        assert config.name
        self._streams[config.name] = config
        try:
            await self.js.stream_info(config.name)
        except NotFoundError:
            await self.js.add_stream(config)
            await self._until_led(config.name)
        else:
            await self.js.update_stream(config)

    async def restore_stream(self, name: str) -> None:
        """Create again a stream this bus ensured before, which has disappeared."""
        config = self._streams.get(name)
        if config is None:
            raise AiosError("internal", f"stream {name} is gone and this service does not own it")
        await self.ensure_stream(config)

    async def ensure_kv(self, bucket: str, *, ttl_s: float | None = None, history: int = 1) -> KeyValue:
        """The bucket, created if missing. Reads are direct gets (`allow_direct`): the server answers
        a key with the message itself, not a JetStream API reply with the value in base64 JSON.
        It has the bus's replicas (an existing bucket with fewer is raised to them)."""
        try:
            kv = await self.js.key_value(bucket)
        except BucketNotFoundError:
            made = await self.js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    ttl=ttl_s,
                    history=history,
                    storage=StorageType.FILE,
                    direct=True,
                    replicas=self.replicas,
                )
            )
            await self._until_led(f"KV_{bucket}")
            return made
        info = await self.js.stream_info(f"KV_{bucket}")
        # Created by an older version (no direct gets) or with fewer replicas: bring it up to date.
        if not info.config.allow_direct or (info.config.num_replicas or 1) < self.replicas:
            update = replace(
                info.config,
                allow_direct=True,
                num_replicas=max(info.config.num_replicas or 1, self.replicas),
            )
            try:
                await self.js.update_stream(update)
            except nats.errors.Error as exc:  # still usable as it is: say so, go on
                log.warning("could not bring bucket %s up to date: %r", bucket, exc)
            else:
                kv = await self.js.key_value(bucket)
        return kv

    async def until_jetstream(self, timeout_s: float = 60.0) -> None:
        """Wait (bounded) until JetStream answers: a NATS cluster started with the services elects
        its meta leader first, and until then every JetStream request times out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        waited = False
        while True:
            try:
                await self.js.account_info()
                if waited:
                    log.info("JetStream answers")
                return
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError) as exc:
                if loop.time() >= deadline:
                    raise RuntimeError(f"JetStream did not answer within {timeout_s:.0f}s: {exc!r}") from exc
                if not waited:
                    log.warning("waiting for JetStream (%r)", exc)
                    waited = True
                await asyncio.sleep(0.5)

    async def _until_led(self, stream: str, timeout_s: float = 10.0) -> None:
        """A stream just created with replicas answers only once its replicas elected a leader: wait
        for one (bounded), so the first write does not fail with "no response from stream"."""
        if self.replicas <= 1:
            return
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(nats.errors.Error):
                info = await self.js.stream_info(stream)
                if info.cluster is not None and info.cluster.leader:
                    return
            await asyncio.sleep(0.1)

    async def others_kv(self, bucket: str, *, wait_s: float = 3.0) -> KeyValue:
        """A bucket another service creates (e.g. the scheduler's limits): wait for it a little,
        since on a locked bus this service may not create it; then create it (an open bus, or a
        service started alone)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            try:
                return await self.js.key_value(bucket)
            except BucketNotFoundError:
                await asyncio.sleep(0.1)
        return await self.ensure_kv(bucket)

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
            beat = _heartbeat_of(msg)  # taken, also while it waits for a free handler
            beating = asyncio.ensure_future(self._beat(msg.reply, beat)) if beat else None
            try:
                async with sem:
                    with tracer.start_as_current_span(
                        f"serve {subject}", context=extract(msg.headers), kind=trace.SpanKind.SERVER
                    ):
                        body, headers = await self._handle(msg, model, handler)
            except Silent:
                return
            finally:
                if beating is not None:
                    beating.cancel()
            if not msg.reply:
                return
            if len(body) > self.nc.max_payload:  # it could never be sent: say so instead
                log.error("reply on %s of %d bytes exceeds the max payload", subject, len(body))
                err = AiosError("internal", f"the reply ({len(body)} bytes) exceeds the bus's max payload")
                body, headers = encode(err.to_reply()), error_headers()
            with contextlib.suppress(nats.errors.Error):  # the caller's deadline tells it
                await self.send_riders()
                await self.nc.publish(msg.reply, body, headers=headers)

        async def on_msg(msg: Msg) -> None:
            self.spawn(process(msg))

        sub = await self.nc.subscribe(subject, queue=queue, cb=on_msg)
        self._subs.append(sub)
        # Once serve() returns the subscription is on the server: a request sent right after, from
        # any connection, finds a responder.
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self.nc.flush(timeout=5)
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

    async def _beat(self, reply: str, every_s: float) -> None:
        """Tell a watched request's caller this worker is on it, every `every_s` until it answers
        (the first after `every_s`: a call answered sooner costs no extra message)."""
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(nats.errors.Error):
                await self.nc.publish(reply, b"", headers={RUNNING_HEADER: self.name})

    async def request_watched(
        self,
        subject: str,
        msg: BaseModel,
        reply: type[Rep],
        *,
        timeout: float,
        heartbeat_s: float = 1.0,
        silence_s: float = 5.0,
    ) -> Rep:
        """Request/reply to a worker that says it is alive while it works: raises WorkerGone when
        nothing (neither a heartbeat nor the answer) came for `silence_s`, so that a worker that
        died is noticed within seconds, not at the deadline. NoRespondersError if no worker
        listens; nats TimeoutError at `timeout`; an ErrorReply comes back as AiosError.

        This is on every syscall's path: replies come to one wildcard subscription shared by all
        watched requests (like nats-py's own `request`), not a subscription per request."""
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[Msg] = asyncio.Queue()
        token = await self._watch_token(got)
        try:
            headers = inject({HEARTBEAT_HEADER: f"{heartbeat_s:g}"})
            await self.send_riders()
            await self.nc.publish(
                subject, encode(msg), reply=f"{self._watch_prefix}.{token}", headers=headers
            )
            deadline = loop.time() + timeout
            worker = None
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise nats.errors.TimeoutError
                try:
                    m = await asyncio.wait_for(got.get(), min(left, silence_s))
                except TimeoutError:
                    if left <= silence_s:
                        raise nats.errors.TimeoutError from None
                    raise WorkerGone(worker or "the worker that took it") from None
                status = (m.headers or {}).get("Status")
                if status == "503" and not m.data:
                    raise nats.errors.NoRespondersError
                if m.headers and RUNNING_HEADER in m.headers:
                    worker = m.headers[RUNNING_HEADER] or worker
                    continue
                return decode_reply(m.data, m.headers, reply)
        finally:
            self._watched.pop(token, None)

    async def _watch_token(self, queue: asyncio.Queue[Msg]) -> str:
        """A reply token of the shared watched-request inbox (subscribed on first use; nats-py
        subscribes it again after a reconnect)."""
        async with self._watch_lock:  # the first requests may come together
            if self._watch_sub is None:
                prefix = self.nc.new_inbox()

                async def route(m: Msg) -> None:
                    q = self._watched.get(m.subject.rsplit(".", 1)[-1])
                    if q is not None:  # else: a late heartbeat or answer of a request given up
                        q.put_nowait(m)

                self._watch_sub = await self.nc.subscribe(f"{prefix}.*", cb=route)
                self._watch_prefix = prefix
        self._watch_seq += 1
        token = str(self._watch_seq)
        self._watched[token] = queue
        return token

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

    # --- messages that ride along ----------------------------------------------------------
    # A socket write costs ~0.1 ms of CPU on a small VM (py-spy: half the scheduler's samples were
    # writes). Fire-and-forget messages (events) therefore wait, up to RIDE_LINGER_S, for a message
    # the service sends anyway (an exec request, a result) and go out in the same write.
    def publish_soon(self, subject: str, data: bytes) -> None:
        """Send `data` with the next message this service sends, or within RIDE_LINGER_S."""
        self._riders.append((subject, data))
        if self._rider_timer is None:
            self._rider_timer = asyncio.get_running_loop().call_later(RIDE_LINGER_S, self._linger_over)

    async def send_riders(self) -> None:
        """Hand the waiting fire-and-forget messages to the connection (its next write carries them)."""
        riders, self._riders = self._riders, []
        for subject, data in riders:
            with contextlib.suppress(nats.errors.Error):
                await self.nc.publish(subject, data)

    def _linger_over(self) -> None:
        self._rider_timer = None
        if self._riders:
            self.spawn(self.send_riders())

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
            # The bus may be away (a service stopped during an outage): stop anyway.
            with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
                await self.nc.flush(timeout=max(1, int(timeout)))
            with contextlib.suppress(nats.errors.Error, OSError):
                await self.nc.close()
