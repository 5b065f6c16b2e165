"""A durable JetStream pull consumer: fetch, validate once into a typed model, hold what is being
worked on (with in-progress heartbeats, so it is not redelivered), and settle it explicitly.

Every stream consumer of the kernel goes through this one helper (STYLE §7: each states its ack
policy, ack wait and max deliveries in its `ConsumerConfig`). A message that cannot be handled is
answered at most once and never redelivered: one that does not parse or validate (nested too deep,
not UTF-8, wrong shape), or whose handler fails with a bug rather than a bus hiccup, is handed to
`on_invalid` (to answer its sender with a typed error) and terminated, since it would fail the same
way on every redelivery. Only transient failures (the bus, a timeout) are redelivered, with backoff.

Messages come through one long-lived pull request, topped up when half of it is used (what the Go
and Java clients' `Consume` do), not a fetch per batch: nats-py's `fetch` costs two pull requests
when the stream is idle (a probe, then a wait), so about one request, one socket write and one
server-side request per syscall at low rates, and a gap between fetches a message could wait in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ValidationError

from aios_schemas import AiosError
from aios_schemas.wire import clip, malformed, validation_error

from .bus import Bus

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

# A handler failing with one of these may succeed if tried again (the bus or a store was away).
TRANSIENT = (nats.errors.Error, TimeoutError, ConnectionError)

# A pull request stays open this long; while it waits, the server says it is alive this often.
PULL_EXPIRES_S = 30.0
PULL_HEARTBEAT_S = 5.0
# Heard nothing from the server for two heartbeats and a second while a pull is open: it is lost
# (the server restarted, the consumer was deleted): pull again, re-creating the consumer if needed.
PULL_SILENCE_S = 2 * PULL_HEARTBEAT_S + 1.0


@dataclass
class Delivery(Generic[T]):
    """One validated message of the stream and the handle to settle it."""

    value: T
    msg: Msg

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def headers(self) -> dict[str, str] | None:
        return self.msg.headers

    @property
    def delivered(self) -> int:
        """How many times JetStream delivered it (1 the first time)."""
        return int(self.msg.metadata.num_delivered) if self.msg.reply else 1

    @property
    def stored_at(self) -> float | None:
        """Unix time (the server's clock) the stream stored it."""
        if not self.msg.reply:
            return None
        ts = self.msg.metadata.timestamp
        return ts.timestamp() if ts is not None else None

    @property
    def msg_id(self) -> str | None:
        """The `Nats-Msg-Id` it was published with (what JetStream de-duplicates on)."""
        return (self.msg.headers or {}).get("Nats-Msg-Id")

    # Settling never raises: a lost connection means JetStream redelivers, which the handlers of
    # an at-least-once stream tolerate (they are idempotent on the message id).
    async def ack(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.msg.ack()

    async def nak(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.msg.nak()

    async def term(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.msg.term()

    async def in_progress(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.msg.in_progress()


Handler = Callable[[Delivery[T]], Awaitable[None]]
OnInvalid = Callable[[Msg, AiosError], Awaitable[None]]


class JsConsumer(Generic[T]):
    """A durable pull consumer on `stream` whose messages are `model`s.

    `run(handle)` fetches forever. With `ack_after=True` a message is acked when `handle` returns
    and nak'ed (redelivered) when it raises; otherwise `handle` keeps the delivery and settles it
    itself (e.g. the scheduler acks only once a syscall's result is stored), and may `hold` it
    meanwhile so that `heartbeat_forever` keeps it from being redelivered.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        stream: str,
        filter_subject: str,
        config: ConsumerConfig,
        model: type[T],
        what: str | None = None,
    ) -> None:
        assert config.durable_name, "a kernel consumer is durable"
        assert config.ack_wait, "a kernel consumer states its ack wait"
        self.bus = bus
        self.stream = stream
        self.filter_subject = filter_subject
        self.config = config
        self.model = model
        self.what = what or model.__name__.lower()
        self.held: dict[str, Delivery[T]] = {}
        self._sub: Subscription | None = None
        self._inbox = ""
        self._outstanding = 0  # messages asked for by open pull requests, not yet delivered
        self._low = 0  # top the pull up when this few are left
        self._heard_at = 0.0  # the server last sent something on the pull inbox
        self._wake = asyncio.Event()  # the pull loop has something to do
        self._lost = False  # the server said the consumer is gone
        self._pause_until = 0.0
        self._handler: tuple[Handler[T], OnInvalid | None, bool] | None = None
        self.progress_at: float | None = None  # the pull loop last heard from the server (or had no room)
        self.stale_s = PULL_SILENCE_S
        self.pull_expires_s = PULL_EXPIRES_S
        self.pull_heartbeat_s = PULL_HEARTBEAT_S

    def problem(self) -> str | None:
        """Its part of the service's health: the fetch loop runs and its fetches succeed."""
        if self.progress_at is None:
            return "not consuming"
        idle = time.monotonic() - self.progress_at
        return f"no word from the stream's server for {idle:.0f}s" if idle > self.stale_s else None

    async def open(self) -> None:
        """Create the durable consumer, or bring an existing one to this config (idempotent), and
        the inbox its pulled messages come to."""
        config = self.config
        if not config.filter_subject:
            config = dataclasses.replace(config, filter_subject=self.filter_subject)
        await self.bus.js.add_consumer(self.stream, config)  # creates, or updates to this config
        if self._sub is None:
            self._inbox = self.bus.nc.new_inbox()
            # Unbounded here: what arrives is bounded by what the pulls asked for.
            self._sub = await self.bus.nc.subscribe(
                self._inbox, cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1
            )
        self._outstanding = 0  # pulls of a consumer that was re-created are gone
        self._lost = False
        self._wake.set()

    async def recover(self) -> bool:
        """After a failed fetch: if the consumer (or its stream) is gone, deleted by an operator or
        lost with the server's storage, create it again (the stream from the config the bus was
        given). True if it was re-created; False if it exists (a transient failure) or the bus is
        still away."""
        js, durable = self.bus.js, self.config.durable_name
        assert durable
        try:
            await js.consumer_info(self.stream, durable)
            return False
        except NotFoundError:
            pass
        except (nats.errors.Error, TimeoutError):
            return False
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            log.error("stream %s is gone: creating it again (what it held is lost)", self.stream)
            await self.bus.restore_stream(self.stream)
        log.error("consumer %s of stream %s is gone: creating it again", durable, self.stream)
        await self.open()
        return True

    def validate(self, msg: Msg) -> T | AiosError:
        try:
            return self.model.model_validate_json(msg.data)
        except ValidationError as exc:
            return validation_error(exc, self.what)
        except (ValueError, RecursionError) as exc:  # a validator choking on odd input
            return malformed(self.what, exc)

    async def run(
        self,
        handle: Handler[T],
        *,
        on_invalid: OnInvalid | None = None,
        batch: Callable[[], int] = lambda: 256,
        wait_for_room: Callable[[float], Awaitable[None]] | None = None,
        ack_after: bool = False,
    ) -> None:
        """Pull and handle forever. `batch()` says how many may be pulled now; 0 means none (then
        `wait_for_room` is awaited, e.g. until some work finished). Messages are handled one at a
        time, in order, by the inbox's callback."""
        assert self._sub is not None, "open() first"
        self._handler = (handle, on_invalid, ack_after)
        self.bus.add_check(f"consumer {self.config.durable_name}", self.problem)
        self.progress_at = self._heard_at = time.monotonic()
        try:
            await self._pull_forever(batch, wait_for_room)
        finally:
            self._handler = None  # what still arrives goes back to the stream

    async def _pull_forever(
        self, batch: Callable[[], int], wait_for_room: Callable[[float], Awaitable[None]] | None
    ) -> None:
        nms = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.config.durable_name}"
        while True:
            now = time.monotonic()
            if self._lost or (self._outstanding and now - self._heard_at > self.stale_s):
                await self._pull_lost()
                continue
            room = batch()
            if room <= 0:  # full: waiting for room is doing its job
                if wait_for_room is not None:
                    await wait_for_room(0.5)
                else:
                    await asyncio.sleep(0.05)
                self.progress_at = time.monotonic()
                continue
            if self._outstanding <= room // 2 and now >= self._pause_until:
                n = room - self._outstanding
                request = {
                    "batch": n,
                    "expires": int(self.pull_expires_s * 1e9),
                    "idle_heartbeat": int(self.pull_heartbeat_s * 1e9),
                }
                try:
                    await self.bus.nc.publish(nms, json.dumps(request).encode(), reply=self._inbox)
                except nats.errors.Error as exc:  # reconnecting: pull again once back
                    log.warning("pulling from %s failed: %r", self.stream, exc)
                    await asyncio.sleep(0.2)
                    continue
                if not self._outstanding:
                    self._heard_at = now  # silence is counted from the first open pull
                self._outstanding += n
                self._low = room // 2
            self._wake.clear()
            reconnect = self.bus.next_reconnect()
            woken = asyncio.ensure_future(self._wake.wait())
            waits: set[asyncio.Future[Any]] = {woken, reconnect}
            paused = self._pause_until - now
            try:
                await asyncio.wait(
                    waits,
                    timeout=self.pull_heartbeat_s if paused <= 0 else paused,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                woken.cancel()
            if reconnect.done():  # pulls may not have survived the outage: ask again
                self._outstanding = 0
            if time.monotonic() - self._heard_at <= self.stale_s:
                self.progress_at = time.monotonic()

    async def _pull_lost(self) -> None:
        log.warning("the pull on %s went silent or its consumer is gone: pulling again", self.stream)
        self._outstanding = 0
        self._heard_at = time.monotonic()
        try:
            await self.recover()
        except (nats.errors.Error, AiosError, TimeoutError) as exc:
            log.warning("re-creating consumer %s failed: %r", self.config.durable_name, exc)
            await asyncio.sleep(0.2)
        self._lost = False

    async def _on_msg(self, msg: Msg) -> None:
        self._heard_at = time.monotonic()
        status = (msg.headers or {}).get("Status") if not msg.reply else None
        if status is not None:
            self._on_status(status, msg)
            return
        self._outstanding = max(0, self._outstanding - 1)
        if self._outstanding <= self._low:
            self._wake.set()  # time to top the pull up
        if self._handler is None:  # stopped (closing): let another replica have it now
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()
            return
        handle, on_invalid, ack_after = self._handler
        self.progress_at = time.monotonic()
        await self._one(msg, handle, on_invalid, ack_after)

    def _on_status(self, status: str, msg: Msg) -> None:
        """A pull request's end or the server's heartbeat (status messages carry no data)."""
        if status == "100":  # idle heartbeat: the pull is alive
            return
        headers = msg.headers or {}
        left = headers.get("Nats-Pending-Messages")
        self._outstanding = max(0, self._outstanding - int(left)) if left and left.isdigit() else 0
        description = headers.get("Description", "")
        if status == "409":
            if "Deleted" in description or "push based" in description:
                self._lost = True
            elif "Leadership Change" not in description:
                # e.g. max ack pending, max waiting: do not ask again at once
                log.info("pull on %s ended: %s %s", self.stream, status, description)
                self._pause_until = time.monotonic() + 0.2
        self._wake.set()

    async def _one(self, msg: Msg, handle: Handler[T], on_invalid: OnInvalid | None, ack_after: bool) -> None:
        value = self.validate(msg)
        if isinstance(value, AiosError):
            log.info("rejected invalid %s on %s: %s", self.what, msg.subject, value.message)
            await self._drop(msg, value, on_invalid)
            return
        delivery = Delivery(value, msg)
        try:
            await handle(delivery)
        except Exception as exc:
            if self._holding(msg):  # the handler kept it: it settles it
                log.exception("handling %s from %s failed (still held)", self.what, msg.subject)
            elif isinstance(exc, TRANSIENT):
                # Again later, backing off (bounded by the consumer's max deliveries).
                delay = min(0.25 * 2 ** (delivery.delivered - 1), self._ack_wait_s)
                log.warning(
                    "handling %s from %s failed (%r): again in %.2fs", self.what, msg.subject, exc, delay
                )
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak(delay=delay)
            else:  # a bug this message triggers would trigger it on every redelivery
                log.exception("handling %s from %s failed: dropped", self.what, msg.subject)
                err = AiosError("internal", clip(f"{type(exc).__name__}: {exc}", 500), retryable=False)
                await self._drop(msg, err, on_invalid)
            return
        if ack_after:
            await delivery.ack()

    async def _drop(self, msg: Msg, err: AiosError, on_invalid: OnInvalid | None) -> None:
        """Answer (at most once) and terminate: JetStream never delivers `msg` again."""
        if on_invalid is not None:
            try:
                await on_invalid(msg, err)
            except Exception:  # RecursionError included: the message is dropped all the same
                log.exception("answering a rejected %s failed", self.what)
        with contextlib.suppress(nats.errors.Error):
            await msg.term()

    def _holding(self, msg: Msg) -> bool:
        return any(d.msg is msg for d in self.held.values())

    @property
    def _ack_wait_s(self) -> float:
        return float(self.config.ack_wait or 30.0)

    # --- holding ----------------------------------------------------------------------------
    def hold(self, key: str, delivery: Delivery[T]) -> bool:
        """Keep `delivery` heartbeated under `key`. False if `key` was already held (a redelivery
        of something in hand): the newest handle replaces the old one, which JetStream dropped."""
        fresh = key not in self.held
        self.held[key] = delivery
        return fresh

    def release(self, key: str) -> Delivery[T] | None:
        return self.held.pop(key, None)

    async def heartbeat_forever(self, interval_s: float) -> None:
        """Tell JetStream every held message is still being worked on (before its ack wait)."""
        while True:
            await asyncio.sleep(interval_s)
            for delivery in list(self.held.values()):
                await delivery.in_progress()
