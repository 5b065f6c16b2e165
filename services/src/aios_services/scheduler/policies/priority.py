"""`priority`: static priority (lower first) with linear aging, preempting for a clearly better job."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from .base import HeapQueue, Job, Policy, PolicyConfigBase, RunningJob


class PriorityConfig(PolicyConfigBase):
    """Static priority with aging: effective priority = priority - aging_rate * seconds waited."""

    name: Literal["priority"] = Field("priority", description="Policy name.")
    aging_rate: float = Field(
        0.1,
        ge=0,
        description="Priority levels gained per second since the job was last queued. 0.1 means a "
        "job 10 levels worse than a steady stream of urgent work still runs after at most 100 s of "
        "extra wait (plus the work queued ahead of it); 0 disables aging (strict priority, can starve).",
    )
    margin: float = Field(
        1.0,
        gt=0,
        description="How many levels better a waiting job must be to suspend a running one; "
        "a positive margin keeps two nearly equal jobs from suspending each other in turn.",
    )


class PriorityPolicy(Policy):
    """Lowest effective priority first; ties by arrival, then id.

    Effective priority at `now` is `priority - aging_rate * (now - queued_at)`, for running jobs too
    (they keep the `queued_at` of their last queueing), so every job ages at the same rate and the
    order never changes while jobs wait: it is the order of `priority + aging_rate * queued_at`, i.e.
    of a virtual deadline `queued_at + priority / aging_rate`. A waiting job therefore runs no later
    than every job with an earlier virtual deadline has been served, which is the starvation bound.
    A job suspended and re-queued starts aging afresh (it has just had service).
    """

    name = "priority"

    def __init__(self, config: PriorityConfig | None = None) -> None:
        self.config = config or PriorityConfig()
        self._queue = HeapQueue()

    def _rank(self, job: Job) -> float:
        """Effective priority plus `aging_rate * now`: comparable across jobs at any single `now`."""
        # A run handed over without a push (e.g. adopted after a scheduler restart) ages from arrival.
        queued = job.arrival if job.queued_at is None else job.queued_at
        return job.priority + self.config.aging_rate * queued

    def effective_priority(self, job: Job, now: float) -> float:
        """The job's priority after aging, as of `now` (lower runs first)."""
        return job.priority - self.config.aging_rate * job.waited(now)

    def push(self, job: Job, now: float) -> None:
        job.queued_at = now
        self._queue.push((self._rank(job), job.arrival, job.id), job)

    def pop(self, now: float) -> Job | None:
        return self._queue.pop()

    def peek(self, now: float) -> Job | None:
        return self._queue.peek()

    def remove(self, job_id: str) -> Job | None:
        return self._queue.remove(job_id)

    def jobs(self, now: float) -> list[Job]:
        return self._queue.ordered()

    def __len__(self) -> int:
        return len(self._queue)

    def preempt(self, running: Sequence[RunningJob], now: float, *, free_slots: int = 0) -> list[str]:
        # The best waiters beyond the free slots, paired with the worst preemptible runs: each pair
        # where the waiter is better by the margin is one suspension.
        free = max(0, free_slots)
        if len(self._queue) <= free:
            return []
        victims = sorted(
            (r.job for r in running if r.job.preemptible),
            key=lambda job: (self._rank(job), job.arrival, job.id),
            reverse=True,
        )
        contenders = self._queue.head(free + len(victims))[free:]
        chosen: list[str] = []
        for waiter, victim in zip(contenders, victims, strict=False):
            if self._rank(waiter) + self.config.margin > self._rank(victim):
                break
            chosen.append(victim.id)
        return chosen

    def backend_priority(self, job: Job, now: float) -> int:
        return math.floor(self.effective_priority(job, now))
