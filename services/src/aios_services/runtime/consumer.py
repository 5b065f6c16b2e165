"""A durable JetStream pull consumer: fetch, validate once into a typed model, hold what is being
worked on (with in-progress heartbeats, so it is not redelivered), and settle it explicitly.

Every stream consumer of the kernel goes through this one helper (STYLE §7: each states its ack
policy, ack wait and max deliveries in its `ConsumerConfig`). A message that cannot be handled is
answered at most once and never redelivered: one that does not parse or validate (nested too deep,
not UTF-8, wrong shape), or whose handler fails with a bug rather than a bus hiccup, is handed to
`on_invalid` (to answer its sender with a typed error) and terminated, since it would fail the same
way on every redelivery. Only transient failures (the bus, a timeout) are redelivered, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import nats
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig
from nats.js.errors import BadRequestError, NotFoundError
from pydantic import BaseModel, ValidationError

from aios_schemas import AiosError
from aios_schemas.wire import clip, malformed, validation_error

from .bus import Bus

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

# A handler failing with one of these may succeed if tried again (the bus or a store was away).
TRANSIENT = (nats.errors.Error, TimeoutError, ConnectionError)


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
        self._psub: nats.js.JetStreamContext.PullSubscription | None = None
        self.progress_at: float | None = None  # the fetch loop last fetched (or had no room to)
        self.stale_s = 10.0

    def problem(self) -> str | None:
        """Its part of the service's health: the fetch loop runs and its fetches succeed."""
        if self.progress_at is None:
            return "not consuming"
        idle = time.monotonic() - self.progress_at
        return f"no successful fetch for {idle:.0f}s" if idle > self.stale_s else None

    async def open(self) -> None:
        """Create the durable consumer, or bring an existing one to this config (idempotent)."""
        js, durable = self.bus.js, self.config.durable_name
        if self._psub is not None:  # opened before: drop the old subscription's inbox
            with contextlib.suppress(nats.errors.Error):
                await self._psub.unsubscribe()
        try:
            self._psub = await js.pull_subscribe(
                self.filter_subject, durable=durable, stream=self.stream, config=self.config
            )
        except BadRequestError:  # it exists with other settings
            await js.add_consumer(self.stream, self.config)
            self._psub = await js.pull_subscribe(self.filter_subject, durable=durable, stream=self.stream)

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
        fetch_timeout_s: float = 1.0,
    ) -> None:
        """Fetch and handle forever. `batch()` says how many to pull now; 0 means none (then
        `wait_for_room` is awaited, e.g. until some work finished)."""
        assert self._psub is not None, "open() first"
        self.stale_s = max(10.0, 5 * fetch_timeout_s)
        self.bus.add_check(f"consumer {self.config.durable_name}", self.problem)
        self.progress_at = time.monotonic()
        while True:
            n = batch()
            if n <= 0:  # full: waiting for room is doing its job
                if wait_for_room is not None:
                    await wait_for_room(0.5)
                else:
                    await asyncio.sleep(0.05)
                self.progress_at = time.monotonic()
                continue
            try:
                msgs = await self._psub.fetch(batch=n, timeout=fetch_timeout_s)
            except TimeoutError:  # nothing to fetch (nats-py raises its own or asyncio's)
                self.progress_at = time.monotonic()
                continue
            except nats.errors.Error as exc:  # reconnecting, or the consumer is gone
                log.warning("fetch from %s failed: %r", self.stream, exc)
                try:
                    if await self.recover():
                        continue
                except (nats.errors.Error, AiosError) as again:
                    log.warning("re-creating consumer %s failed: %r", self.config.durable_name, again)
                await asyncio.sleep(0.2)
                continue
            for msg in msgs:
                self.progress_at = time.monotonic()
                await self._one(msg, handle, on_invalid, ack_after)
            self.progress_at = time.monotonic()

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
