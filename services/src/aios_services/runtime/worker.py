"""A worker service's side of the syscall path, for every resource that is not an LLM model (memory,
files, tools): publish the resource in the scheduler's catalogue, take exec requests on its lane,
run one handler per syscall, answer `done` with the result or a typed error, and keep successful
replies so a syscall re-sent after a scheduler crash (`again`) is answered, not run twice.

A service plugs in with one call: `await serve_resource(bus, stack, settings, ResourceSpec(...),
handler)`, where the handler takes the admitted `Syscall` (its `agent` is the authenticated caller:
the scheduler checked it against the NATS user that published it) and returns the result payload,
or raises `AiosError`. A service with many resources (the tools service: one per tool, each with its
own slots) uses `serve_resources(..., [specs], handler)` and adds or withdraws resources later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue
from pydantic import Field

from aios_schemas import (
    AiosError,
    AnyResult,
    BackendEntry,
    ControlRequest,
    ExecReply,
    ExecRequest,
    ResourceEntry,
    Syscall,
    SyscallResult,
    decode,
    encode,
    resource_key,
)

from .bus import Bus
from .finished import FINISHED_TTL_S, FinishedRuns
from .service import cancel_and_wait, keep_running
from .settings import ServiceSettings

log = logging.getLogger(__name__)

Handler = Callable[[Syscall], Awaitable[AnyResult]]  # the result payload of the syscall's kind
Route = Callable[[ExecRequest], Awaitable[ExecReply]]  # takes the lane's calls instead (partitioned.py)


class WorkerSettings(ServiceSettings):
    """What every worker service adds to the shared settings (environment, prefix `AIOS_`)."""

    slots: int = Field(64, ge=1, description="Syscalls of this resource one replica runs at once.")
    catalog_refresh_s: float = Field(
        5.0, gt=0, description="How often this replica re-confirms its resource in the catalogue."
    )
    partitions: int = Field(
        1,
        ge=1,
        le=256,
        description="Partitions of a service's data by agent (memory, storage), each owned by one replica;"
        " more than 1 lets replicas share the load. Set it before the first start: data written with one"
        " count is refused under another.",
    )


@dataclass(frozen=True)
class ResourceSpec:
    service: str  # e.g. "memory", "storage"
    resource: str  # e.g. "memory", "files": what the scheduler's `resources.KINDS` maps the kind to
    lane: str = "local"
    # Kinds that change nothing: running one again is harmless, so its reply is not kept (a read's
    # reply can be large, and keeping it would cost a store write on every read).
    read_only: frozenset[str] = frozenset()
    slots: int | None = None  # how many at once on this replica (None: the service's `slots`)
    # False: the catalogue entry is published but this process does not take the lane's calls
    # (another process does, e.g. an external tool worker).
    serve: bool = True
    # Each call waits for an operator's approval in the scheduler (e.g. an irreversible tool).
    requires_approval: bool = False
    # A running call is stopped when the scheduler says so (the agent cancelled it, or its deadline
    # passed): `ctl.<service>.control`. Off where stopping a handler midway could leave half a write.
    cancellable: bool = False
    # Run at most once (e.g. a tool with side effects): its start is recorded before it runs, and a
    # call sent again after its worker died midway is answered `backend_error` (it may have run)
    # instead of run a second time. Otherwise a run cut off by a crash runs again (at least once).
    at_most_once: bool = False


async def serve_resource(
    bus: Bus, stack: AsyncExitStack, settings: WorkerSettings, spec: ResourceSpec, handler: Handler
) -> ResourceWorker:
    served = await serve_resources(bus, stack, settings, [spec], handler)
    return served.workers[spec.resource]


async def serve_resources(
    bus: Bus,
    stack: AsyncExitStack,
    settings: WorkerSettings,
    specs: Sequence[ResourceSpec],
    handler: Handler,
    *,
    route: Route | None = None,
) -> ServedResources:
    """Serve several resources from one service (the tools service: one per tool, each with its own
    slots, so each tool's concurrency is its own queue in the scheduler). More can be added or
    withdrawn later (`ServedResources.add`/`remove`), e.g. when an MCP server's tools appear."""
    bucket = bus.ns.finished_bucket
    finished = FinishedRuns(await bus.ensure_kv(bucket, ttl_s=FINISHED_TTL_S), bucket)
    limits = await bus.others_kv(bus.ns.limits_bucket)  # the scheduler's
    served = ServedResources(bus, settings, handler, finished, limits, route)
    for spec in specs:
        await served.add(spec)
    bus.add_check("catalogue", served.problem)
    refresher = asyncio.create_task(keep_running("catalogue refresh", served.refresh_forever))
    stack.push_async_callback(served.withdraw_all)
    stack.push_async_callback(cancel_and_wait, refresher)
    return served


class ServedResources:
    """The resources one worker replica serves: their exec lanes and their catalogue entries."""

    def __init__(
        self,
        bus: Bus,
        settings: WorkerSettings,
        handler: Handler,
        finished: FinishedRuns,
        limits: KeyValue,
        route: Route | None = None,
    ) -> None:
        self.bus = bus
        self.route = route
        self.settings = settings
        self.handler = handler
        self.finished = finished
        self.limits = limits
        self.workers: dict[str, ResourceWorker] = {}
        self._entries: dict[str, ResourceEntry] = {}
        self._subs: dict[str, Subscription] = {}
        self._control: set[str] = set()  # services whose control subject this replica follows
        self.confirmed = time.monotonic()

    async def add(self, spec: ResourceSpec) -> ResourceWorker:
        slots = spec.slots or self.settings.slots
        worker = ResourceWorker(self.bus, spec, self.handler, self.finished)
        # Serve before publishing: the scheduler dispatches as soon as it sees the entry.
        if spec.serve:
            self._subs[spec.resource] = await self.bus.serve(
                self.bus.ns.exec_lane(spec.service, spec.resource, spec.lane),
                ExecRequest,
                self.route or worker.exec,
                queue=spec.service,
                max_concurrency=slots,
            )
        self.workers[spec.resource] = worker
        if spec.cancellable and spec.service not in self._control:
            self._control.add(spec.service)
            # No queue group: every replica hears it; the one running the syscall stops it.
            await self.bus.nc.subscribe(self.bus.ns.ctl(spec.service, "control"), cb=self._on_control)
        entry = ResourceEntry(
            name=spec.resource,
            service=spec.service,
            lanes=[BackendEntry(name=spec.lane, slots=slots)],
            replica=self.settings.instance,
            requires_approval=spec.requires_approval,
        )
        self._entries[spec.resource] = entry
        await self._publish(entry)
        return worker

    async def _on_control(self, msg: Msg) -> None:
        try:
            req = decode(msg.data, ControlRequest)
        except AiosError as exc:
            log.warning("bad control message: %s", exc.message)
            return
        if req.action == "cancel":
            for worker in list(self.workers.values()):
                worker.cancel(req.id)

    async def remove(self, resource: str) -> None:
        """Stop serving `resource`: the scheduler stops routing to this replica at once."""
        self.workers.pop(resource, None)
        self._entries.pop(resource, None)
        sub = self._subs.pop(resource, None)
        with contextlib.suppress(nats.errors.Error):
            if sub is not None:
                await sub.unsubscribe()
            await self.limits.delete(resource_key(resource, self.settings.instance))

    async def _publish(self, entry: ResourceEntry) -> None:
        key = resource_key(entry.name, self.settings.instance)
        await self.limits.put(key, encode(entry.model_copy(update={"ts": time.time()})))

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.catalog_refresh_s)
            with contextlib.suppress(nats.errors.Error):
                for entry in list(self._entries.values()):
                    await self._publish(entry)
                self.confirmed = time.monotonic()

    async def withdraw_all(self) -> None:  # a graceful stop: the scheduler stops routing here at once
        for resource in list(self._entries):
            with contextlib.suppress(nats.errors.Error):
                await self.limits.delete(resource_key(resource, self.settings.instance))

    def problem(self) -> str | None:
        late = time.monotonic() - self.confirmed
        return f"not confirmed for {late:.0f}s" if late > 3 * self.settings.catalog_refresh_s else None


class ResourceWorker:
    def __init__(self, bus: Bus, spec: ResourceSpec, handler: Handler, finished: FinishedRuns) -> None:
        self.bus = bus
        self.spec = spec
        self.handler = handler
        self.finished = finished
        self._inflight: dict[str, asyncio.Future[ExecReply]] = {}
        self._handling: dict[str, asyncio.Future[AnyResult]] = {}  # cancellable runs, by syscall id
        self._stopping: set[str] = set()

    def cancel(self, syscall_id: str) -> None:
        """Stop the run of `syscall_id` here, if it runs here (a cancellable resource only)."""
        task = self._handling.get(syscall_id)
        if task is not None and not task.done():
            self._stopping.add(syscall_id)
            task.cancel()

    async def idle(self, timeout: float) -> None:
        """Wait (up to `timeout`) until the calls running here have finished."""
        running = list(self._inflight.values())
        if running:
            await asyncio.wait(running, timeout=timeout)

    async def exec(self, req: ExecRequest) -> ExecReply:
        sid = req.syscall.id
        run = self._inflight.get(sid)
        if run is None and req.again:
            kept = await self.finished.get(req.syscall.agent, sid)
            if kept is not None:  # done before the scheduler that asked for it crashed
                return kept
            run = self._inflight.get(sid)
            if run is None and self.spec.at_most_once and await self.finished.started(req.syscall.agent, sid):
                err = AiosError(
                    "backend_error",
                    f"{req.syscall.kind} was interrupted (its worker stopped while it ran): it may have"
                    " taken effect, so it is not run again",
                    details={"interrupted": True},
                )
                return _done(SyscallResult.fail(sid, err.to_reply()))
        if run is None:
            run = asyncio.ensure_future(self._run(req))
            self._inflight[sid] = run
            run.add_done_callback(lambda _: self._inflight.pop(sid, None))
        return await asyncio.shield(run)  # a waiter that goes away must not cancel the run

    async def _run(self, req: ExecRequest) -> ExecReply:
        call = req.syscall
        started = time.monotonic()
        try:
            remaining = req.deadline - time.time()
            if remaining <= 0:
                raise AiosError("deadline_exceeded", "the deadline passed before the call ran")
            if self.spec.at_most_once and not await self.finished.claim_start(
                call.agent, call.id, until=time.monotonic() + remaining
            ):
                return await self._started_elsewhere(call, remaining)
            handling = asyncio.ensure_future(self.handler(call))
            if self.spec.cancellable:
                self._handling[call.id] = handling
            payload = await asyncio.wait_for(handling, timeout=remaining)
        except asyncio.CancelledError:
            if call.id not in self._stopping:
                raise
            err = AiosError("cancelled", f"{call.kind} was cancelled while it ran")
            return _done(SyscallResult.fail(call.id, err.to_reply(), service_ms=_ms(started)))
        except AiosError as exc:
            return _done(SyscallResult.fail(call.id, exc.to_reply(), service_ms=_ms(started)))
        except TimeoutError:
            err = AiosError("deadline_exceeded", f"{call.kind} did not finish before its deadline")
            return _done(SyscallResult.fail(call.id, err.to_reply(), service_ms=_ms(started)))
        except nats.errors.Error as exc:  # the bus failed under the handler (a node died): say so
            log.warning("%s %s: the bus failed: %r", call.kind, call.id, exc)
            err = AiosError(
                "backend_unavailable", f"{call.kind} failed on the bus: {type(exc).__name__}", retryable=True
            )
            return _done(SyscallResult.fail(call.id, err.to_reply(), service_ms=_ms(started)))
        except Exception as exc:  # a bug in a handler: typed, logged, and the service keeps serving
            log.exception("%s %s failed", call.kind, call.id)
            err = AiosError("internal", f"{call.kind} failed: {type(exc).__name__}")
            return _done(SyscallResult.fail(call.id, err.to_reply(), service_ms=_ms(started)))
        finally:
            self._handling.pop(call.id, None)
            self._stopping.discard(call.id)
        reply = _done(SyscallResult.ok(call.id, payload, service_ms=_ms(started)))
        if call.kind in self.spec.read_only:
            return reply
        try:  # before answering: a write answered but not kept could run twice after a crash
            await self.finished.put(call.agent, call.id, reply)
        except nats.errors.Error as exc:
            log.warning("could not keep the reply of %s: %s", call.id, exc)
        return reply

    async def _started_elsewhere(self, call: Syscall, remaining: float) -> ExecReply:
        """An at-most-once call that another run already started (a duplicate dispatch): its reply,
        once that run keeps it, else (it failed, or its worker died) `interrupted`, never a second
        run."""
        deadline = time.monotonic() + min(remaining, STARTED_ELSEWHERE_WAIT_S)
        while time.monotonic() < deadline:
            kept = await self.finished.get(call.agent, call.id)
            if kept is not None:
                return kept
            await asyncio.sleep(0.1)
        err = AiosError(
            "backend_error",
            f"{call.kind} was started by another run that has not answered: it may have taken effect,"
            " so it is not run again",
            details={"interrupted": True},
        )
        return _done(SyscallResult.fail(call.id, err.to_reply()))


STARTED_ELSEWHERE_WAIT_S = 10.0  # how long a duplicate waits for the first run's kept reply


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _done(result: SyscallResult) -> ExecReply:
    return ExecReply(outcome="done", result=result)
