"""The JetStream resources the scheduler owns: the syscall work queue, events, results."""

from __future__ import annotations

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from aios_schemas import Namespace

from .settings import SchedulerSettings

DURABLE = "scheduler"
# JetStream drops a re-published syscall id within this window (Nats-Msg-Id): admission relies on it
# to skip the result lookup for fresh ids (admission.py). The server keeps each id this long:
# ~100 bytes an id, so 10 minutes at 1,000 syscalls/s is ~60 MB.
DUPLICATE_WINDOW_S = 600.0


def syscalls_stream(ns: Namespace) -> StreamConfig:
    # Work-queue retention: a syscall leaves the stream when the scheduler acks it (after its result
    # is stored). The duplicate window makes a client's retried publish of the same id a no-op (also
    # after the first was acked: JetStream tracks ids, not messages).
    return StreamConfig(
        name=ns.syscalls_stream,
        subjects=[ns.sys_all],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msgs=1_000_000,
        discard=DiscardPolicy.NEW,
    )


def events_stream(ns: Namespace) -> StreamConfig:
    return StreamConfig(
        name=ns.events_stream,
        subjects=[ns.events_all],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=24 * 3600.0,
        max_msgs=5_000_000,
    )


def consumer(settings: SchedulerSettings) -> ConsumerConfig:
    # Explicit acks; unacked syscalls are redelivered after ack_wait, which the scheduler extends
    # with in-progress heartbeats while it holds them (queued or running).
    return ConsumerConfig(
        durable_name=DURABLE,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=settings.max_inflight,
        deliver_policy=DeliverPolicy.ALL,
    )
