"""`python -m aios_services.recorder`: every syscall event and every process's spans (the events
stream, `evt.>`) into DuckDB; new rows archived to Parquet on S3 periodically; `ctl.recorder.trace`
and `ctl.recorder.stats` answer `aios trace` and `aios stats`.

Messages are acked only once the batch holding them is committed: a crash redelivers them, and
their stream sequence (the primary key) stores each once.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

import nats.js.errors
from minio import Minio
from minio.error import S3Error
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, ValidationError

from aios_schemas import AiosError, Namespace, SyscallEvent
from aios_schemas.traces import SpanBatch, SpanRecord, TraceQuery, TraceReply, UsageQuery, UsageReply

from ..runtime import Bus, HealthDetails, cancel_and_wait, keep_running, main_for
from ..runtime.consumer import Delivery, JsConsumer
from ..runtime.exclusive import exclusive
from ..runtime.service import load_settings
from ..runtime.storage import S3Config
from . import explore
from .settings import RecorderSettings
from .store import TraceStore

log = logging.getLogger(__name__)


class AnyEvent(BaseModel):
    """Whatever is on `evt.>`: read by subject, not by shape (the consumer validates JSON only)."""

    model_config = {"extra": "allow"}


def from_agent(span: SpanRecord, agent: str) -> SpanRecord:
    """A span an agent's process sent: stamped with the agent the bus authenticated, and never
    passed off as a kernel service's (`aios-*` names are the kernel's)."""
    service = span.service
    if not service or service.startswith(("aios-", "unknown_service")):
        service = f"agent:{agent}"
    return span.model_copy(
        update={"service": service, "attributes": {**span.attributes, "aios.sender": agent}}
    )


class Recorder:
    def __init__(self, store: TraceStore, settings: RecorderSettings) -> None:
        self.store = store
        self.settings = settings
        self.pending: list[Delivery[AnyEvent]] = []
        self.recorded = {"events": 0, "spans": 0, "other": 0, "archived": 0}

    async def take(self, d: Delivery[AnyEvent]) -> None:
        self.pending.append(d)  # acked once written (flush)

    async def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        events: list[tuple[int, SyscallEvent]] = []
        spans: list[tuple[int, SpanRecord]] = []
        others: list[tuple[int, str, bytes]] = []  # audit decisions, evictions...: kept as they came
        for d in batch:
            seq = d.msg.metadata.sequence.stream
            try:
                if d.subject.endswith(".spans"):
                    got = SpanBatch.model_validate_json(d.msg.data).spans
                    sender = Namespace.spans_agent(d.subject)
                    spans += [(seq, s if sender is None else from_agent(s, sender)) for s in got]
                elif ".evt.syscall." in d.subject:
                    events.append((seq, SyscallEvent.model_validate_json(d.msg.data)))
                else:
                    others.append((seq, d.subject.split(".evt.", 1)[-1], d.msg.data))
            except ValidationError as exc:  # kept out of the store; not redelivered forever
                log.warning("unreadable event on %s: %s", d.subject, exc.errors()[0]["msg"])
        await self.store.run(lambda: self.store.write(events, spans, others))
        self.recorded["events"] += len(events)
        self.recorded["spans"] += len(spans)
        self.recorded["other"] += len(others)
        # Ack-all: acking the newest delivery acks every earlier one (one ack per batch, not per event).
        newest = max(batch, key=lambda d: d.msg.metadata.sequence.consumer)
        await newest.ack()

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.recorder_flush_s)
            await self.flush()

    async def archive_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.recorder_export_s)
            await self.archive()

    async def archive(self) -> dict[str, int]:
        if self.store.s3 is None:
            return {}
        done = await self.store.run(lambda: self.store.archive(self.settings.traces_bucket))
        self.recorded["archived"] += sum(done.values())
        return done

    async def trace(self, q: TraceQuery) -> TraceReply:
        await self.flush()  # what has arrived is answered
        if q.id is not None:
            ids = [q.id]
        elif q.agent is not None:
            agent = q.agent
            ids = await self.store.run(lambda: self.store.recent(agent, q.limit))
        else:
            return TraceReply()
        bucket = None
        if q.archive:
            if self.store.s3 is None:
                raise AiosError("invalid_request", "this recorder archives nothing (no S3 configured)")
            await self.archive()  # everything recorded so far is in the archive
            bucket = self.settings.traces_bucket
        events = await self.store.run(lambda: self.store.events_of(ids, bucket))
        spans = await self.store.run(lambda: self.store.spans_of(ids, bucket))
        return TraceReply(events=events, spans=spans)

    async def stats(self, q: UsageQuery) -> UsageReply:
        await self.flush()
        prices = self.settings.recorder_prices
        rows = await self.store.run(lambda: self.store.usage(q.since, q.agent, prices))
        return UsageReply(rows=rows)


def ensure_bucket(s3: S3Config, bucket: str) -> None:
    from urllib.parse import urlparse

    url = urlparse(s3.endpoint)
    client = Minio(url.netloc, s3.access_key, s3.secret_key, secure=url.scheme == "https", region=s3.region)
    try:
        client.make_bucket(bucket)
    except S3Error as exc:
        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


async def wait_for_stream(bus: Bus, stream: str, timeout_s: float) -> None:
    """The scheduler creates (and configures) the events stream: a recorder started first waits for
    it rather than failing its start, bounded."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await bus.js.stream_info(stream)
            return
        except nats.js.errors.NotFoundError:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    f"no {stream} stream after {timeout_s:.0f}s: the scheduler creates it (is it running?)"
                ) from None
            await asyncio.sleep(0.2)


async def start(bus: Bus, stack: AsyncExitStack, settings: RecorderSettings) -> HealthDetails:
    s3 = None
    if settings.s3_endpoint:
        s3 = S3Config(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key.get_secret_value())
        await asyncio.to_thread(ensure_bucket, s3, settings.traces_bucket)
    store = await asyncio.to_thread(TraceStore, settings.recorder_db, s3)
    stack.callback(store.close)
    recorder = Recorder(store, settings)
    consumer = JsConsumer(
        bus,
        stream=bus.ns.events_stream,
        filter_subject=bus.ns.events_all,
        config=ConsumerConfig(
            durable_name="recorder-v2",  # (v1 acked each message: an ack policy cannot be changed)
            ack_policy=AckPolicy.ALL,
            ack_wait=30.0,
            max_deliver=5,
            deliver_policy=DeliverPolicy.ALL,
            max_ack_pending=50_000,
        ),
        model=AnyEvent,
        what="event",
    )
    await wait_for_stream(bus, bus.ns.events_stream, settings.stream_wait_s)
    await consumer.open()
    stack.push_async_callback(recorder.flush)  # what is buffered is written before the store closes
    tasks = [
        asyncio.create_task(
            keep_running("event intake", lambda: consumer.run(recorder.take, batch=lambda: 2048))
        ),
        asyncio.create_task(keep_running("flush", recorder.flush_forever)),
        asyncio.create_task(keep_running("archive", recorder.archive_forever)),
    ]
    for task in tasks:
        stack.push_async_callback(cancel_and_wait, task)
    await bus.serve(bus.ns.ctl("recorder", "trace"), TraceQuery, recorder.trace, max_concurrency=4)
    await bus.serve(bus.ns.ctl("recorder", "stats"), UsageQuery, recorder.stats, max_concurrency=4)
    await explore.serve(bus, store, recorder.flush)  # the web console's queries
    return lambda: {**recorder.recorded, "pending": len(recorder.pending)}


def main() -> None:
    settings = load_settings("recorder", RecorderSettings)
    # One active replica (its DuckDB file is one), others standing by (runtime/exclusive.py).
    main_for(
        "recorder",
        settings,
        exclusive(
            "recorder",
            settings.instance,
            settings.partition_ttl_s,
            lambda bus, stack: start(bus, stack, settings),
        ),
    )


if __name__ == "__main__":
    main()
