"""The previous `las` implementation (a scan of the waiting jobs per decision), kept as the
reference the indexed one must match decision for decision."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from aios_services.scheduler.policies.base import Job, Policy, RunningJob
from aios_services.scheduler.policies.las import LasConfig


@dataclass(slots=True)
class _Program:
    attained: float = 0.0
    last_active: float = 0.0
    waiting: int = 0
    running: int = 0


class ReferenceLasPolicy(Policy):
    """Dispatch from the lowest non-empty queue, FIFO (by queue time) within a queue.

    A job's queue is its program's level, or 0 once it has waited `beta * attained` (promotion).
    The program's attained service is the sum of the service of its finished and suspended calls
    (a call in flight counts when it ends). Levels move with program accounting and promotions
    with time, so `pop` scans the waiting jobs: O(n) per dispatch, for the n waiting on one resource
    of one replica (thousands at most), cheaper than keeping time-dependent indexes consistent.

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

    def level(self, job: Job, now: float) -> int:
        """The queue the job competes in at `now`: 0 is served first."""
        attained = self.program_attained(job.program)
        if job.waited(now) >= self.config.beta * attained:
            return 0  # starving relative to its program's service (or a program with none yet)
        return bisect.bisect_right(self._thresholds, attained)

    def _key(self, job: Job, now: float) -> tuple[int, float, float, str]:
        queued = job.arrival if job.queued_at is None else job.queued_at
        return (self.level(job, now), queued, job.arrival, job.id)

    def _account(self, job: Job, service: float, now: float) -> None:
        self._promoted.discard(job.id)
        program = self._program(job.program, now)
        program.attained += service
        program.running = max(0, program.running - 1)
        self._prune(now)

    # -- queue ---------------------------------------------------------------------------------------

    def push(self, job: Job, now: float) -> None:
        if job.id in self._waiting:
            raise ValueError(f"job {job.id!r} is already queued")
        job.queued_at = now
        self._waiting[job.id] = job
        self._program(job.program, now).waiting += 1
        self._prune(now)

    def peek(self, now: float) -> Job | None:
        if not self._waiting:
            return None
        return min(self._waiting.values(), key=lambda job: self._key(job, now))

    def pop(self, now: float) -> Job | None:
        job = self.peek(now)
        if job is not None:
            attained = self.program_attained(job.program)
            if self.level(job, now) < bisect.bisect_right(self._thresholds, attained):
                self._promoted.add(job.id)
            del self._waiting[job.id]
            program = self._program(job.program, now)
            program.waiting -= 1
            program.running += 1
        return job

    def remove(self, job_id: str) -> Job | None:
        job = self._waiting.pop(job_id, None)
        if job is not None:
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

    def preempt(self, running: Sequence[RunningJob], now: float, *, free_slots: int = 0) -> list[str]:
        if free_slots > 0 or not self._waiting:
            return []
        wanted = sorted(self.level(j, now) for j in self._waiting.values())
        victims = sorted(
            (r for r in running if r.job.preemptible and r.job.id not in self._promoted),
            key=lambda r: -self._running_attained(r, now),
        )
        out: list[str] = []
        for level, victim in zip(wanted, victims, strict=False):
            if bisect.bisect_right(self._thresholds, self._running_attained(victim, now)) <= level:
                break  # the most-served running call is no worse than the best waiting job
            out.append(victim.job.id)
        return out

    def next_preemption(self, running: Sequence[RunningJob], now: float) -> float | None:
        if not self._waiting:
            return None
        best = min(self.level(j, now) for j in self._waiting.values())
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
