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


def syscalls_stream(ns: Namespace) -> StreamConfig:
    # Work-queue retention: a syscall leaves the stream when the scheduler acks it (after its result
    # is stored). The duplicate window makes a client's retried publish of the same id a no-op.
    return StreamConfig(
        name=ns.syscalls_stream,
        subjects=[ns.sys_all],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=120.0,
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
