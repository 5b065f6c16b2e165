"""A worker resource whose data is partitioned by agent (memory, storage): any replica takes the
scheduler's calls on the resource's lane; the replica that owns the call's partition runs it, and
the others forward it there (`partitions.py` says who owns what).

A service plugs in with `serve_partitioned(bus, stack, settings, spec, Partitioning(...))`: `key`
names the agent whose data a call touches, `open(k)` opens partition k's store and returns the
handler for its calls and the function that closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import nats
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from aios_schemas import (
    AiosError,
    AnyPayload,
    AnyResult,
    ExecReply,
    ExecRequest,
    Syscall,
    SyscallResult,
    new_id,
)

from .bus import WORKER_SILENCE_S, Bus, WorkerGone
from .partitions import Partitions, partition_of
from .service import cancel_and_wait, keep_running
from .worker import Handler, ResourceSpec, ResourceWorker, ServedResources, WorkerSettings, serve_resources

log = logging.getLogger(__name__)

Close = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Partitioning:
    # Where a call goes: the agent whose data it touches (str), a partition named by the call
    # itself (int, e.g. in an id the partition made), or None: every partition (a query over all
    # agents' data, e.g. what was shared with the caller), answered together by `merge`.
    key: Callable[[Syscall], str | int | None]
    open: Callable[[int], Awaitable[tuple[Handler, Close]]]  # open partition k: its handler, its close
    merge: Callable[[Syscall, list[AnyResult]], AnyResult] | None = None
    # Completes a partition's answer with what other partitions hold (e.g. a grant's reply lists
    # what was shared with the caller too): called with the resource and the request and reply.
    complete: Callable[[PartitionedResource, ExecRequest, ExecReply], Awaitable[ExecReply]] | None = None


class PartitionedResource:
    """The lane's calls, each run where its partition is served."""

    def __init__(self, bus: Bus, spec: ResourceSpec, settings: WorkerSettings, parting: Partitioning) -> None:
        self.bus = bus
        self.spec = spec
        self.settings = settings
        self.parting = parting
        self.count = settings.partitions
        self.slots = spec.slots or settings.slots
        self.served: ServedResources | None = None  # set by serve_partitioned
        self.workers: dict[int, ResourceWorker] = {}
        self._subs: dict[int, Subscription] = {}
        self._closers: dict[int, Close] = {}
        self.forwarded = 0

    def partition(self, call: Syscall) -> int | None:
        key = self.parting.key(call)
        if key is None:
            return None
        return key % self.count if isinstance(key, int) else partition_of(key, self.count)

    async def take(self, k: int) -> None:
        assert self.served is not None
        handler, close = await self.parting.open(k)
        worker = ResourceWorker(self.bus, self.spec, handler, self.served.finished)
        try:
            sub = await self.bus.serve(
                self.bus.ns.exec_partition(self.spec.service, k),
                ExecRequest,
                worker.exec,
                queue=self.spec.service,
                max_concurrency=self.slots,
            )
        except BaseException:
            await close()
            raise
        self.workers[k], self._subs[k], self._closers[k] = worker, sub, close

    async def give(self, k: int) -> None:
        """Stop serving partition k: new calls for it go to its next owner; those in progress here
        finish before its store closes."""
        worker = self.workers.pop(k, None)
        sub = self._subs.pop(k, None)
        close = self._closers.pop(k, None)
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        if worker is not None:  # bounded well inside the lease TTL: the other leases must be refreshed
            await worker.idle(min(self.settings.drain_timeout_s, self.settings.partition_ttl_s / 2))
        if close is not None:
            await close()

    async def call(self, agent: str, payload: AnyPayload, timeout_s: float) -> AnyResult:
        """Run a call as `agent` where its partition is served (the operator's read-only
        inspection): its result, or its error raised."""
        call = Syscall(id=new_id(), agent=agent, payload=payload)
        done = await self.exec(
            ExecRequest(syscall=call, resource=self.spec.resource, deadline=time.time() + timeout_s)
        )
        result = done.result
        assert result is not None
        if result.error is not None:
            e = result.error
            raise AiosError(e.code, e.message, retryable=e.retryable, details=e.details)
        assert result.result is not None
        return result.result

    async def exec(self, req: ExecRequest) -> ExecReply:
        k = self.partition(req.syscall)
        if k is None:
            return await self.everywhere(req)
        reply = await self.on(k, req)
        if self.parting.complete is not None and self.count > 1:
            reply = await self.parting.complete(self, req, reply)
        return reply

    async def everywhere(self, req: ExecRequest) -> ExecReply:
        """Ask every partition and merge the answers (a query over all agents' data). The first
        partition's error, if any, is the answer: a partial result would look complete."""
        started = time.monotonic()
        replies = await asyncio.gather(*(self.on(k, req) for k in range(self.count)))
        results = []
        for reply in replies:
            r = reply.result
            if r is None or r.status != "ok" or r.result is None:
                return reply
            results.append(r.result)
        if self.parting.merge is None:
            err = AiosError("internal", f"{req.syscall.kind} has no partition and no merge")
            return _failed(req, err)
        try:
            merged = self.parting.merge(req.syscall, results)
        except AiosError as exc:
            return _failed(req, exc)
        ms = (time.monotonic() - started) * 1000
        return ExecReply(outcome="done", result=SyscallResult.ok(req.syscall.id, merged, service_ms=ms))

    async def on(self, k: int, req: ExecRequest) -> ExecReply:
        """Run `req` on partition k: here if it is served here, else where it is. No owner yet (a
        handover, or the owner died and its lease has not expired): wait for one, up to the
        deadline. The owner fell silent midway: ask the next owner `again`, which answers from the
        kept reply if the call had finished."""
        subject = self.bus.ns.exec_partition(self.spec.service, k)
        pause = 0.02
        while True:
            worker = self.workers.get(k)
            if worker is not None:
                return await worker.exec(req)
            left = req.deadline - time.time()
            if left <= 0:
                return _failed(req, AiosError("deadline_exceeded", "no replica served its partition in time"))
            try:
                self.forwarded += 1
                return await self.bus.request_watched(
                    subject, req, ExecReply, timeout=left, heartbeat_s=1.0, silence_s=WORKER_SILENCE_S
                )
            except nats.errors.NoRespondersError:
                await asyncio.sleep(min(pause, max(left, 0)))
                pause = min(pause * 2, 0.5)
            except WorkerGone:
                log.warning(
                    "the owner of partition %d went silent running %s: asking again", k, req.syscall.id
                )
                req = req.model_copy(update={"again": True})
            except nats.errors.TimeoutError:
                return _failed(req, AiosError("deadline_exceeded", "no answer before the deadline"))
            except AiosError as exc:
                return _failed(req, exc)


async def _unused(call: Syscall) -> AnyResult:  # the lane routes by partition (route=), never here
    raise AiosError("internal", f"{call.kind} reached a partitioned lane's default handler")


async def lease_bucket(bus: Bus, ttl_s: float) -> tuple[KeyValue, float]:
    """KV `AIOS_OWNERS` and the TTL its entries really have: the bucket's, set by whichever service
    created it, which may not be this one's setting (leases refreshed on a slower clock than the
    bucket's would expire between refreshes)."""
    owners = await bus.ensure_kv(bus.ns.owners_bucket, ttl_s=ttl_s)
    status = await owners.status()
    return owners, status.ttl or ttl_s


def _failed(req: ExecRequest, exc: AiosError) -> ExecReply:
    return ExecReply(outcome="done", result=SyscallResult.fail(req.syscall.id, exc.to_reply()))


async def serve_partitioned(
    bus: Bus, stack: AsyncExitStack, settings: WorkerSettings, spec: ResourceSpec, parting: Partitioning
) -> tuple[PartitionedResource, Partitions]:
    """Serve `spec`'s lane on this replica: calls of the partitions it owns run here, the others'
    go to their owners. The service checks its files against the count first (`check_layout`)."""
    resource = PartitionedResource(bus, spec, settings, parting)
    owners, ttl_s = await lease_bucket(bus, settings.partition_ttl_s)
    parts = Partitions(
        owners,
        spec.service,
        settings.instance,
        settings.partitions,
        resource.take,
        resource.give,
        ttl_s=ttl_s,
    )
    # Last out: close the partitions after the lane stopped taking calls (below, pushed later).
    stack.push_async_callback(parts.release_all)
    resource.served = await serve_resources(bus, stack, settings, [spec], _unused, route=resource.exec)
    await parts.tick()  # a lone replica serves at once; others wait for their leases
    bus.add_check("partitions", parts.problem)
    ticker = asyncio.create_task(keep_running("partition leases", parts.run_forever))
    stack.push_async_callback(cancel_and_wait, ticker)
    return resource, parts


__all__ = ["PartitionedResource", "Partitioning", "serve_partitioned"]
