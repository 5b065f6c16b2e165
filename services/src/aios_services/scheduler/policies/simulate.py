"""A virtual-time simulation of one resource with N slots driven by a policy, as the scheduler drives it.

Used by the unit tests (exact dispatch orders) and to compare policies on synthetic agent workloads
(mean / p99 program completion time). Calls run at rate 1 (a call of `service` seconds occupies a
slot for that long); a suspended call resumes with its remaining service plus `switch_cost` (the
re-prefill of its context). No clock, no randomness except in `mixed_workload`, which is seeded.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .base import Job, Policy, RunningJob


@dataclass(frozen=True, slots=True)
class SimCall:
    """One call of a trace. Calls of a program get ids `program#0`, `program#1`... in trace order."""

    program: str
    service: float
    arrival: float = 0.0
    """When the call is issued, unless `after` is set."""
    after: float | None = None
    """If set, the call is issued this long after all the program's earlier calls in the trace have
    finished (a sequential agent: think, then call again); ignored on a program's first call."""
    with_previous: bool = False
    """Issued together with the program's previous call in the trace (a parallel fan-out, as in
    tree search); `arrival` and `after` are then ignored."""
    priority: int = 0
    preemptible: bool = True


@dataclass(frozen=True, slots=True)
class Run:
    """One dispatch of a job, until it finished or was suspended."""

    job_id: str
    program: str
    queued: float
    started: float
    ended: float
    finished: bool


@dataclass(slots=True)
class SimResult:
    """What happened: every run in dispatch order and when each job and program completed."""

    dispatches: list[str] = field(default_factory=list)
    """Job ids in dispatch order; a resumed job appears once per run."""
    runs: list[Run] = field(default_factory=list)
    """Every run, in the order they ended."""
    completion: dict[str, float] = field(default_factory=dict)
    program_arrival: dict[str, float] = field(default_factory=dict)
    program_completion: dict[str, float] = field(default_factory=dict)

    @property
    def suspended(self) -> list[str]:
        """Ids of the runs that ended in a suspension, in order."""
        return [run.job_id for run in self.runs if not run.finished]

    def response_times(self) -> dict[str, float]:
        """Per program: completion of its last call minus issue of its first."""
        return {p: done - self.program_arrival[p] for p, done in self.program_completion.items()}

    def mean_response(self) -> float:
        times = list(self.response_times().values())
        return sum(times) / len(times)

    def percentile_response(self, q: float) -> float:
        """Nearest-rank percentile (q in (0, 100]) of program response times."""
        times = sorted(self.response_times().values())
        return times[max(0, math.ceil(q / 100 * len(times)) - 1)]


def simulate(
    policy: Policy,
    calls: Sequence[SimCall],
    *,
    slots: int = 1,
    switch_cost: float = 0.0,
    max_steps: int = 1_000_000,
) -> SimResult:
    """Run `calls` on a resource with `slots` slots under `policy`, in virtual time.

    At each instant, in this order: runs that end finish (`on_finished`), due calls are pushed,
    free slots are filled by `pop`, then `preempt` is asked and each suspended run is accounted
    (`on_suspended`) and pushed back, repeating dispatch and preempt until nothing changes.
    """
    if slots < 1:
        raise ValueError("slots must be >= 1")
    ids: list[str] = []
    seen: dict[str, int] = {}
    # A program is a chain of steps; a step is a call plus the calls issued with it (a fan-out).
    # `wave_of[i]` lists the calls issued together with call i (its step, i first); `next_step[i]`
    # is the first call of the step that follows once every call of i's step has finished.
    wave_of: dict[int, list[int]] = {}
    step_of: dict[int, int] = {}  # call index -> index of the first call of its step
    next_step: dict[int, int] = {}
    last_step: dict[str, int] = {}
    issue: list[tuple[float, int, int]] = []  # (time, order, first call index of a step)
    order = itertools.count()
    for index, call in enumerate(calls):
        ids.append(f"{call.program}#{seen.get(call.program, 0)}")
        seen[call.program] = seen.get(call.program, 0) + 1
        previous = last_step.get(call.program)
        if call.with_previous and previous is not None:
            wave_of[previous].append(index)
            step_of[index] = previous
            continue
        wave_of[index] = [index]
        step_of[index] = index
        if call.after is not None and previous is not None:
            next_step[previous] = index
        else:
            heapq.heappush(issue, (call.arrival, next(order), index))
        last_step[call.program] = index
    unfinished = {first: len(wave) for first, wave in wave_of.items()}

    result = SimResult()
    running: dict[str, tuple[RunningJob, float]] = {}  # job id -> (run, finish time)
    remaining: dict[str, float] = {}
    index_of = {job_id: index for index, job_id in enumerate(ids)}
    now = 0.0
    for _ in range(max_steps):
        candidates = [t for t in (issue[0][0] if issue else None,) if t is not None]
        candidates += [finish for _, finish in running.values()]
        wake = policy.next_preemption([run for run, _ in running.values()], now)
        if wake is not None and wake > now:
            candidates.append(wake)
        if not candidates:
            return result
        now = max(now, min(candidates))

        for job_id, (run, finish) in sorted(running.items(), key=lambda item: (item[1][1], item[0])):
            if finish > now:
                continue
            del running[job_id]
            policy.on_finished(run.job, now - run.started, now)
            queued = run.job.queued_at if run.job.queued_at is not None else run.started
            result.runs.append(Run(job_id, run.job.program, queued, run.started, now, finished=True))
            result.completion[job_id] = now
            result.program_completion[run.job.program] = now
            step = step_of[index_of[job_id]]
            unfinished[step] -= 1
            nxt = next_step.get(step)
            if unfinished[step] == 0 and nxt is not None:
                heapq.heappush(issue, (now + (calls[nxt].after or 0.0), next(order), nxt))

        while issue and issue[0][0] <= now:
            _, _, first = heapq.heappop(issue)
            for index in wave_of[first]:
                call = calls[index]
                job = Job(
                    id=ids[index],
                    agent=call.program,
                    program=call.program,
                    arrival=now,
                    priority=call.priority,
                    preemptible=call.preemptible,
                )
                remaining[job.id] = call.service
                result.program_arrival.setdefault(call.program, now)
                policy.push(job, now)

        for _round in range(slots + len(policy) + 1):
            while len(running) < slots and (picked := policy.pop(now)) is not None:
                result.dispatches.append(picked.id)
                running[picked.id] = (RunningJob(picked, now), now + remaining[picked.id])
            victims = policy.preempt(
                [run for run, _ in running.values()], now, free_slots=slots - len(running)
            )
            if not victims:
                break
            for job_id in victims:
                run, finish = running.pop(job_id)
                if not run.job.preemptible:
                    raise AssertionError(f"{policy.name} preempted non-preemptible job {job_id}")
                remaining[job_id] = finish - now + switch_cost
                queued = run.job.queued_at if run.job.queued_at is not None else run.started
                policy.on_suspended(run.job, now - run.started, now)
                result.runs.append(Run(job_id, run.job.program, queued, run.started, now, finished=False))
                policy.push(run.job, now)
    raise RuntimeError(f"simulation did not finish within {max_steps} steps")


def mixed_workload(programs: int = 50, *, seed: int = 0, slots: int = 4, load: float = 1.0) -> list[SimCall]:
    """Agent programs shaped after the Autellix mix (see BENCH-REFERENCE.md), scaled down.

    Three kinds, drawn 40/40/20: chat (about 6.7 sequential calls of 1-4 s, priority 0), tool use
    (about 11 sequential calls of 0.2-1 s, priority 1) and tree search (about 8 steps that each fan
    out 2-8 parallel calls of 0.5-1.5 s, priority 2: the LATS shape, shortened). Counts are
    geometric-like (exponential, rounded). A sequential call is issued 0-0.5 s (think time) after
    its program's previous step finished. Programs arrive as a Poisson process offering `load`
    times the capacity of `slots` slots on average.
    """
    rng = random.Random(seed)
    # (share, mean steps, calls per step, service range, priority)
    kinds = [
        (0.4, 6.66, (1, 1), (1.0, 4.0), 0),
        (0.4, 10.75, (1, 1), (0.2, 1.0), 1),
        (0.2, 8.0, (2, 8), (0.5, 1.5), 2),
    ]
    mean_work = sum(s * n * (a + b) / 2 * (lo + hi) / 2 for s, n, (a, b), (lo, hi), _ in kinds)
    rate = load * slots / mean_work  # programs per second
    trace: list[SimCall] = []
    clock = 0.0
    for number in range(programs):
        clock += rng.expovariate(rate)
        draw = rng.random()
        kind = next((k for k in kinds if (draw := draw - k[0]) < 0), kinds[-1])
        _, mean_steps, (fan_lo, fan_hi), (lo, hi), priority = kind
        name = f"p{number:02d}"
        for step in range(max(1, round(rng.expovariate(1 / mean_steps)))):
            for k in range(rng.randint(fan_lo, fan_hi)):
                trace.append(
                    SimCall(
                        program=name,
                        service=round(rng.uniform(lo, hi), 3),
                        arrival=clock,
                        after=None if step == 0 else round(rng.uniform(0.0, 0.5), 3),
                        with_previous=k > 0,
                        priority=priority,
                    )
                )
    return trace
