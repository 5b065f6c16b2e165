"""The policy interface: `Job`, `RunningJob` and the `Policy` base every scheduling policy implements.

A policy orders the waiting syscalls of one resource (an LLM backend with N slots, a tool with its
`max_concurrency`...) and says when a running one should be suspended. It is pure: no I/O, no clock,
no capacity counting. The scheduler service owns those and drives a policy like this::

    policy.push(job, now)                  # a syscall became runnable (new, or resumed)
    while free_slots and (job := policy.pop(now)):
        dispatch(job)                      # remember RunningJob(job, started=now)
    for job_id in policy.preempt(running, now, free_slots=free_slots):
        ask_backend_to_suspend(job_id)     # then, when the backend confirms:
    policy.on_suspended(job, service, now); policy.push(job, now)
    policy.on_finished(job, service, now)  # every call that ran ends here (ok, error, cancelled)
    policy.remove(job_id)                  # a waiting syscall was cancelled or hit its deadline

`service` is always the seconds the job ran *in this run* (since its last dispatch); the policy adds
it to `job.attained` (so the caller never does) and to whatever per-program account it keeps.
`next_preemption(running, now)` tells the caller when to call `preempt` again if nothing else
happens (a timer); `backend_priority` is the number to hand to backends with their own priority
scheduling (vLLM `--scheduling-policy priority`, lower first).

Times are seconds on any monotonic clock the caller chooses; every method that can depend on time
takes `now` explicitly (even `peek` and `jobs`: LAS promotions depend on it), so a policy is
deterministic and tests drive time by hand. `push` stamps `job.queued_at`; policies mutate a `Job`
only there and in the two accounting hooks.
"""

from __future__ import annotations

import heapq
import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


class PolicyConfigBase(BaseModel):
    """Base of every policy's config: strict (unknown keys are errors naming the key) and frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(slots=True, kw_only=True)
class Job:
    """One syscall waiting for, or running on, a resource: the policy's process control block."""

    id: str
    agent: str
    arrival: float
    """When the syscall was first queued (seconds); never changes across suspensions."""
    program: str = ""
    """Agent program / session id, the unit of LAS fairness; empty means the agent."""
    priority: int = 0
    """Static priority from the syscall; lower runs first (the vLLM convention)."""
    attained: float = 0.0
    """Service this job has received so far (seconds); grows across suspensions (set by the policy)."""
    preemptible: bool = True
    """False when the backend cannot continue a partial message: such a job is never preempted."""
    queued_at: float | None = None
    """When the job last became runnable (set by `Policy.push`); its wait is counted from here."""

    def __post_init__(self) -> None:
        if not self.program:
            self.program = self.agent

    def waited(self, now: float) -> float:
        """Seconds since the job last became runnable (0 if it was never queued)."""
        return 0.0 if self.queued_at is None else max(0.0, now - self.queued_at)


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A dispatched job and when its current run started."""

    job: Job
    started: float

    def ran(self, now: float) -> float:
        """Seconds of the current run so far."""
        return max(0.0, now - self.started)


class Policy(ABC):
    """Decides which waiting job of one resource runs next, and which running ones to suspend.

    Subclasses implement the queue (`push`, `pop`, `peek`, `remove`, `jobs`, `__len__`); the
    accounting hooks and "never preempt" defaults live here.
    """

    name: str

    @abstractmethod
    def push(self, job: Job, now: float) -> None:
        """Queue a runnable job (new, or resumed after a suspension). Sets `job.queued_at = now`."""

    @abstractmethod
    def pop(self, now: float) -> Job | None:
        """Remove and return the job to dispatch next, or None when nothing waits."""

    @abstractmethod
    def peek(self, now: float) -> Job | None:
        """The job `pop(now)` would return, without removing it."""

    @abstractmethod
    def remove(self, job_id: str) -> Job | None:
        """Drop a waiting job (cancelled, deadline passed); None if it is not waiting here."""

    @abstractmethod
    def jobs(self, now: float) -> list[Job]:
        """The waiting jobs in the order they would be dispatched at `now` (for `aios top`)."""

    @abstractmethod
    def __len__(self) -> int:
        """How many jobs wait."""

    def on_finished(self, job: Job, service: float, now: float) -> None:
        """A dispatched job's call ended (with any outcome) after `service` seconds in this run."""
        job.attained += service

    def on_suspended(self, job: Job, service: float, now: float) -> None:
        """A dispatched job was suspended after `service` seconds in this run; the caller re-pushes it."""
        job.attained += service

    def preempt(self, running: Sequence[RunningJob], now: float, *, free_slots: int = 0) -> list[str]:
        """Ids of running jobs to suspend now, given what waits and how many slots are free.

        Never returns a non-preemptible job. The default policy does not preempt.
        """
        return []

    def next_preemption(self, running: Sequence[RunningJob], now: float) -> float | None:
        """The earliest time `preempt` could return something if no job arrives or ends before it.

        None when only an arrival or a completion can change the answer (the caller calls
        `preempt` after those anyway).
        """
        return None

    def backend_priority(self, job: Job, now: float) -> int:
        """The priority to pass to a backend that schedules by priority itself (lower first)."""
        return job.priority


class HeapQueue:
    """A priority queue of jobs under a fixed sort key, with O(log n) push/pop and lazy removal.

    The key is computed once at push; policies whose order does not change while a job waits
    (fifo, rr, priority with linear aging) use it. Removed jobs stay in the heap as stale entries
    until they reach the top, which keeps `remove` O(1).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[float | str, ...], int, Job]] = []
        self._live: dict[str, tuple[int, Job]] = {}  # job id -> (sequence number of its live entry, job)
        self._seq = itertools.count()

    def _is_live(self, entry: tuple[tuple[float | str, ...], int, Job]) -> bool:
        live = self._live.get(entry[2].id)
        return live is not None and live[0] == entry[1]

    def push(self, key: tuple[float | str, ...], job: Job) -> None:
        if job.id in self._live:
            raise ValueError(f"job {job.id!r} is already queued")
        seq = next(self._seq)
        self._live[job.id] = (seq, job)
        heapq.heappush(self._heap, (key, seq, job))

    def _drop_stale(self) -> None:
        while self._heap and not self._is_live(self._heap[0]):
            heapq.heappop(self._heap)

    def peek(self) -> Job | None:
        self._drop_stale()
        return self._heap[0][2] if self._heap else None

    def pop(self) -> Job | None:
        self._drop_stale()
        if not self._heap:
            return None
        _, _, job = heapq.heappop(self._heap)
        del self._live[job.id]
        return job

    def remove(self, job_id: str) -> Job | None:
        live = self._live.pop(job_id, None)
        if live is None:
            return None
        # Compact when stale entries dominate, so a cancel storm cannot grow the heap unboundedly.
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [entry for entry in self._heap if self._is_live(entry)]
            heapq.heapify(self._heap)
        return live[1]

    def head(self, count: int) -> list[Job]:
        """The first `count` live jobs in pop order, in O(k log k) for k entries visited: a walk of
        the heap's tree from its root, always expanding the smallest entry seen (a child is never
        smaller than its parent), skipping stale entries. Not `nsmallest` over the heap: that reads
        every waiting job, and `preempt` asks on every dispatch cycle."""
        out: list[Job] = []
        heap = self._heap
        frontier: list[tuple[tuple[tuple[float | str, ...], int, Job], int]] = [(heap[0], 0)] if heap else []
        while frontier and len(out) < count:
            entry, i = heapq.heappop(frontier)
            if self._is_live(entry):
                out.append(entry[2])
            for child in (2 * i + 1, 2 * i + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))
        return out

    def ordered(self) -> list[Job]:
        """Live jobs in pop order (keys then push order; the sequence number breaks every tie)."""
        return [job for _, _, job in sorted(e for e in self._heap if self._is_live(e))]

    def __iter__(self) -> Iterator[Job]:
        return (job for _, job in self._live.values())

    def __len__(self) -> int:
        return len(self._live)
