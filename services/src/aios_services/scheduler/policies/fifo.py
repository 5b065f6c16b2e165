"""`fifo`: dispatch in arrival order (ties by id); never preempts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import HeapQueue, Job, Policy, PolicyConfigBase


class FifoConfig(PolicyConfigBase):
    """First in, first out: the AIOS paper's baseline scheduler."""

    name: Literal["fifo"] = Field("fifo", description="Policy name.")


class FifoPolicy(Policy):
    """Arrival order. A resumed job keeps its original arrival, so it goes back to the front."""

    name = "fifo"

    def __init__(self, config: FifoConfig | None = None) -> None:
        self.config = config or FifoConfig()
        self._queue = HeapQueue()

    def push(self, job: Job, now: float) -> None:
        job.queued_at = now
        self._queue.push((job.arrival, job.id), job)

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
