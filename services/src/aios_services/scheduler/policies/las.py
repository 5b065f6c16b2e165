"""`las`: program-level least-attained-service (Autellix PLAS) in K queues, with anti-starvation.

A program (an agent session) that has received little service so far goes first, so short agents
are not stuck behind long ones even when those arrived earlier; this minimises mean program
completion time when program lengths are unknown and skewed, which agent workloads are.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from .base import Job, Policy, PolicyConfigBase, RunningJob


class LasConfig(PolicyConfigBase):
    """Program-level LAS: queue k holds programs whose attained service lies in [T(k-1), T(k))."""

    name: Literal["las"] = Field("las", description="Policy name.")
    queues: int = Field(
        4,
        ge=1,
        le=32,
        description="Number of queues K. Thresholds are base_quantum * growth**k for k < K-1; with "
        "the defaults 2 s, 8 s and 32 s: one-shot calls and fresh programs, a few calls, a multi-step "
        "agent, a long search (hundreds of calls).",
    )
    base_quantum: float = Field(
        2.0,
        gt=0,
        description="Attained service (s) that moves a program out of the top queue: about one "
        "typical LLM call, so a fresh or one-shot program always competes in the top queue.",
    )
    growth: float = Field(
        4.0,
        gt=1,
        description="Ratio between successive thresholds: geometric quanta give few queues that still "
        "separate programs whose lengths differ by orders of magnitude.",
    )
    beta: float = Field(
        2.0,
        gt=0,
        description="Anti-starvation: a waiting job whose wait reaches beta times its program's "
        "attained service joins the top queue, where it is served in queue order. So a job waits "
        "about beta * attained plus the work queued before it, at most; a program's slowdown from "
        "LAS is bounded near 1 + beta. Larger values favour short programs more; math.inf disables.",
    )
    forget_after: float = Field(
        600.0,
        gt=0,
        description="Seconds after which an idle program (nothing waiting or running) is forgotten, "
        "so accounting stays bounded; a program that comes back later starts fresh.",
    )

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Attained-service boundaries between queues, ascending (K-1 values)."""
        return tuple(self.base_quantum * self.growth**k for k in range(self.queues - 1))


@dataclass(slots=True)
class _Program:
    attained: float = 0.0
    last_active: float = 0.0
    waiting: int = 0
    running: int = 0


class LasPolicy(Policy):
    """Dispatch from the lowest non-empty queue, FIFO (by queue time) within a queue.

    A job's queue is its program's level, or 0 once it has waited `beta * attained` (promotion).
    The program's attained service is the sum of the service of its finished and suspended calls
    (a call in flight counts when it ends).

    Indexed, so a decision costs O(log n) for n waiting jobs (the scheduler makes several per
    dispatch): one heap per queue ordered by (queued_at, arrival, id), a heap of promotion times
    (queued_at + beta * attained) for jobs outside queue 0, and a count per queue. Entries are
    versioned and skipped lazily once stale. A job moves between heaps only when its program's
    attained service changes (its program's waiting jobs are re-indexed: usually one) or when its
    promotion time passes. The decisions are exactly those of the scan it replaced
    (tests/unit/test_las_indexed.py drives both with random operations).

    Preemption, as in Autellix's multi-level queues: when every slot is busy, a running call whose
    program (counting the call's own run so far) has passed into a strictly lower queue than a
    waiting job is suspended for it. Without this, short programs that arrive together with long
    ones wait behind the long ones' first calls (LAS knows nothing of a program before it ran).
    Calls in the same queue never preempt each other, so long programs do not thrash.
    """

    name = "las"

    def __init__(self, config: LasConfig | None = None) -> None:
        self.config = config or LasConfig()
        self._thresholds = self.config.thresholds
        self._waiting: dict[str, Job] = {}
        self._programs: dict[str, _Program] = {}
        self._next_prune = -float("inf")
        # Jobs dispatched through anti-starvation promotion keep top-queue rank while they run:
        # otherwise the promoted call would be preempted at once by any fresh program.
        self._promoted: set[str] = set()
        # The index: where each waiting job is (queue, version), the queues, promotion times.
        self._queues: list[list[tuple[float, float, str, int]]] = [[] for _ in range(self.config.queues)]
        self._counts = [0] * self.config.queues
        self._where: dict[str, tuple[int, int]] = {}
        self._promotions: list[tuple[float, str, int]] = []
        self._by_program: dict[str, set[str]] = {}
        self._version = 0

    # -- accounting ----------------------------------------------------------------------------------

    def _program(self, name: str, now: float) -> _Program:
        program = self._programs.get(name)
        if program is None:
            program = self._programs[name] = _Program(last_active=now)
        program.last_active = max(program.last_active, now)
        return program

    def _prune(self, now: float) -> None:
        # A full scan at most four times per forget_after: bounded memory at amortised O(1) cost.
        if now < self._next_prune:
            return
        self._next_prune = now + self.config.forget_after / 4
        cutoff = now - self.config.forget_after
        stale = [
            name
            for name, p in self._programs.items()
            if not p.waiting and not p.running and p.last_active <= cutoff
        ]
        for name in stale:
            del self._programs[name]

    def program_attained(self, program: str) -> float:
        """Service (s) the program's finished and suspended calls received (0 if unknown/forgotten)."""
        known = self._programs.get(program)
        return known.attained if known else 0.0

    def _program_level(self, attained: float) -> int:
        return bisect.bisect_right(self._thresholds, attained)

    def _starving(self, job: Job, attained: float, now: float) -> bool:
        return job.waited(now) >= self.config.beta * attained

    def level(self, job: Job, now: float) -> int:
        """The queue the job competes in at `now`: 0 is served first."""
        attained = self.program_attained(job.program)
        if self._starving(job, attained, now):
            return 0  # starving relative to its program's service (or a program with none yet)
        return self._program_level(attained)

    def _key(self, job: Job, now: float) -> tuple[int, float, float, str]:
        queued = job.arrival if job.queued_at is None else job.queued_at
        return (self.level(job, now), queued, job.arrival, job.id)

    def _account(self, job: Job, service: float, now: float) -> None:
        self._promoted.discard(job.id)
        program = self._program(job.program, now)
        program.attained += service
        program.running = max(0, program.running - 1)
        for other in list(self._by_program.get(job.program, ())):  # their level and promotion moved
            self._index(self._waiting[other])
        self._prune(now)

    # -- the index -----------------------------------------------------------------------------------

    def _index(self, job: Job) -> None:
        """(Re)place a waiting job in its program's queue, with its promotion time."""
        self._unindex(job.id)
        self._version += 1
        version = self._version
        attained = self.program_attained(job.program)
        level = self._program_level(attained)
        queued = job.arrival if job.queued_at is None else job.queued_at
        if level > 0:
            promote_at = queued + self.config.beta * attained
            if promote_at != float("inf"):
                heapq.heappush(self._promotions, (promote_at, job.id, version))
        self._place(job, level, version)

    def _place(self, job: Job, level: int, version: int) -> None:
        queued = job.arrival if job.queued_at is None else job.queued_at
        heapq.heappush(self._queues[level], (queued, job.arrival, job.id, version))
        self._where[job.id] = (level, version)
        self._counts[level] += 1

    def _unindex(self, job_id: str) -> None:
        where = self._where.pop(job_id, None)
        if where is not None:
            self._counts[where[0]] -= 1

    def _promote(self, now: float) -> None:
        """Move the jobs whose promotion time has come into queue 0."""
        recheck: list[tuple[float, str, int]] = []
        while self._promotions and self._promotions[0][0] <= now + 1e-9:
            entry = heapq.heappop(self._promotions)
            _, job_id, version = entry
            where = self._where.get(job_id)
            if where is None or where[1] != version or where[0] == 0:
                continue  # stale, or already in queue 0
            job = self._waiting[job_id]
            if not self._starving(job, self.program_attained(job.program), now):
                recheck.append(entry)  # a rounding hair early: the exact test decides, later
                continue
            self._unindex(job_id)
            self._place(job, 0, version)
        for entry in recheck:
            heapq.heappush(self._promotions, entry)

    def _head(self, level: int) -> Job | None:
        queue = self._queues[level]
        while queue:
            _, _, job_id, version = queue[0]
            where = self._where.get(job_id)
            if where is not None and where == (level, version):
                return self._waiting[job_id]
            heapq.heappop(queue)  # stale: moved, re-indexed or gone
        return None

    # -- queue ---------------------------------------------------------------------------------------

    def push(self, job: Job, now: float) -> None:
        if job.id in self._waiting:
            raise ValueError(f"job {job.id!r} is already queued")
        job.queued_at = now
        self._waiting[job.id] = job
        self._program(job.program, now).waiting += 1
        self._by_program.setdefault(job.program, set()).add(job.id)
        self._index(job)
        self._prune(now)

    def peek(self, now: float) -> Job | None:
        if not self._waiting:
            return None
        self._promote(now)
        for level, count in enumerate(self._counts):
            if count:
                return self._head(level)
        return None

    def pop(self, now: float) -> Job | None:
        job = self.peek(now)
        if job is not None:
            attained = self.program_attained(job.program)
            if self.level(job, now) < self._program_level(attained):
                self._promoted.add(job.id)
            self._forget(job)
            program = self._program(job.program, now)
            program.waiting -= 1
            program.running += 1
        return job

    def _forget(self, job: Job) -> None:
        del self._waiting[job.id]
        self._unindex(job.id)
        ids = self._by_program.get(job.program)
        if ids is not None:
            ids.discard(job.id)
            if not ids:
                del self._by_program[job.program]

    def remove(self, job_id: str) -> Job | None:
        job = self._waiting.get(job_id)
        if job is not None:
            self._forget(job)
            program = self._programs.get(job.program)
            if program is not None:
                program.waiting -= 1
        return job

    def jobs(self, now: float) -> list[Job]:
        return sorted(self._waiting.values(), key=lambda job: self._key(job, now))

    def __len__(self) -> int:
        return len(self._waiting)

    def on_finished(self, job: Job, service: float, now: float) -> None:
        super().on_finished(job, service, now)
        self._account(job, service, now)

    def on_suspended(self, job: Job, service: float, now: float) -> None:
        super().on_suspended(job, service, now)
        self._account(job, service, now)

    def backend_priority(self, job: Job, now: float) -> int:
        return self.level(job, now)

    # -- preemption ----------------------------------------------------------------------------------

    def _running_attained(self, r: RunningJob, now: float) -> float:
        return self.program_attained(r.job.program) + r.ran(now)

    def _levels(self, now: float, n: int) -> list[int]:
        """The queues of the `n` best waiting jobs, best first."""
        self._promote(now)
        out: list[int] = []
        for level, count in enumerate(self._counts):
            out.extend([level] * min(count, n - len(out)))
            if len(out) >= n:
                break
        return out

    def preempt(self, running: Sequence[RunningJob], now: float, *, free_slots: int = 0) -> list[str]:
        if free_slots > 0 or not self._waiting:
            return []
        victims = sorted(
            (r for r in running if r.job.preemptible and r.job.id not in self._promoted),
            key=lambda r: -self._running_attained(r, now),
        )
        wanted = self._levels(now, len(victims))
        out: list[str] = []
        for level, victim in zip(wanted, victims, strict=False):
            if self._program_level(self._running_attained(victim, now)) <= level:
                break  # the most-served running call is no worse than the best waiting job
            out.append(victim.job.id)
        return out

    def next_preemption(self, running: Sequence[RunningJob], now: float) -> float | None:
        if not self._waiting:
            return None
        best = self._levels(now, 1)[0]
        if best >= len(self._thresholds):
            return None  # the best waiting job is in the last queue: nothing can be worse
        crossing = self._thresholds[best]  # a running call past this is in a worse queue
        times = [
            now + (crossing - att)
            for r in running
            if r.job.preemptible
            and r.job.id not in self._promoted
            and (att := self._running_attained(r, now)) < crossing
        ]
        return min(times) if times else None
