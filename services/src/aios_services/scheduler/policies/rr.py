"""`rr`: round-robin, FIFO order with a time slice after which a running job yields to a waiting one."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from .base import HeapQueue, Job, Policy, PolicyConfigBase, RunningJob


class RoundRobinConfig(PolicyConfigBase):
    """Round-robin with a time slice (the AIOS paper's second scheduler)."""

    name: Literal["rr"] = Field("rr", description="Policy name.")
    quantum: float = Field(
        2.0,
        gt=0,
        description="Time slice in seconds: a run this long is suspended when another job waits. "
        "About the length of one short LLM call, so short calls finish in one slice and only long "
        "generations pay for a context switch.",
    )


class RoundRobinPolicy(Policy):
    """Queue order is push order: new jobs and suspended ones both join the back.

    A run's time is cut into slices of `quantum`; its latest slice boundary is the last multiple of
    the quantum it has reached. A run past its first slice yields to a waiting job that has not run
    yet at once, and to a job that itself yielded only if it was queued before that boundary (so,
    at the latest, at the next boundary). Without that exception simultaneous expiries cascade: the
    job suspended first would at once preempt the next over-quantum run and be resumed, paying two
    context switches for nothing. `preempt` suspends no more runs than there are such waiting jobs
    beyond the free slots, longest-running first, so a lone long job keeps its slot.
    """

    name = "rr"

    def __init__(self, config: RoundRobinConfig | None = None) -> None:
        self.config = config or RoundRobinConfig()
        self._queue = HeapQueue()
        self._order = itertools.count()

    def push(self, job: Job, now: float) -> None:
        job.queued_at = now
        self._queue.push((next(self._order),), job)

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

    def _boundary(self, run: RunningJob, now: float) -> float:
        """Start of the run's current slice (a run not past its first slice has none yet: -inf)."""
        slices = math.floor(run.ran(now) / self.config.quantum)
        return run.started + slices * self.config.quantum if slices >= 1 else -math.inf

    def preempt(self, running: Sequence[RunningJob], now: float, *, free_slots: int = 0) -> list[str]:
        expired = sorted(
            ((self._boundary(r, now), r) for r in running if r.job.preemptible),
            key=lambda br: (br[1].started, br[1].job.id),
        )
        expired = [(b, r) for b, r in expired if b > -math.inf]
        if not expired or len(self._queue) <= free_slots:
            return []
        # The first waiters take the free slots; only those after them contend for running slots.
        free = max(0, free_slots)
        waiting = self._queue.head(free + len(expired))[free:]

        # A waiter that never ran may claim any expired run; one that yielded only runs whose slice
        # began after it was queued. These sets are nested, so matching the most restricted waiter
        # first (latest queued) to the longest-running run it may claim finds the largest matching.
        def since(job: Job) -> float:
            return job.queued_at if job.attained > 0 and job.queued_at is not None else -math.inf

        chosen: list[str] = []
        for waiter in sorted(waiting, key=since, reverse=True):
            for i, (boundary, run) in enumerate(expired):
                if boundary > since(waiter):
                    chosen.append(run.job.id)
                    del expired[i]
                    break
        return chosen

    def next_preemption(self, running: Sequence[RunningJob], now: float) -> float | None:
        if not self._queue:
            return None
        # The next slice boundary of any preemptible run: every job waiting now may claim it there.
        ends = [
            max(self._boundary(r, now), r.started) + self.config.quantum for r in running if r.job.preemptible
        ]
        return min(ends, default=None)
