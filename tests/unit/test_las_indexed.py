"""The indexed `las` makes exactly the decisions of the scan it replaced: random operations drive
both, every answer is compared. (What it costs is measured by `bench.las_policy`, not asserted.)"""

from __future__ import annotations

import random

import pytest

from aios_services.scheduler.policies import Job, LasConfig, LasPolicy, RunningJob
from tests.unit.las_reference import ReferenceLasPolicy


def twin(job: Job) -> Job:
    return Job(
        id=job.id,
        agent=job.agent,
        arrival=job.arrival,
        program=job.program,
        priority=job.priority,
        attained=job.attained,
        preemptible=job.preemptible,
    )


@pytest.mark.parametrize("seed", range(12))
def test_same_decisions_as_the_scan(seed: int) -> None:
    rng = random.Random(seed)
    config = LasConfig(base_quantum=rng.choice([0.5, 2.0]), beta=rng.choice([0.5, 2.0, float("inf")]))
    new, ref = LasPolicy(config), ReferenceLasPolicy(config)
    jobs_new: dict[str, Job] = {}
    jobs_ref: dict[str, Job] = {}
    running: dict[str, float] = {}  # id -> start time
    programs = [f"p{i}" for i in range(rng.randint(2, 12))]
    now = 0.0
    for step in range(600):
        now += rng.choice([0.0, 0.01, 0.1, 0.5, 1.0, 3.0])
        op = rng.random()
        if op < 0.35:
            jid = f"j{step}"
            j = Job(
                id=jid, agent="a", arrival=now, program=rng.choice(programs), preemptible=rng.random() < 0.8
            )
            jobs_new[jid], jobs_ref[jid] = j, twin(j)
            new.push(jobs_new[jid], now)
            ref.push(jobs_ref[jid], now)
        elif op < 0.6:
            a, b = new.pop(now), ref.pop(now)
            assert (a and a.id) == (b and b.id), (step, a, b)
            if a is not None:
                running[a.id] = now
        elif op < 0.8 and running:
            jid = rng.choice(sorted(running))
            ran = now - running.pop(jid)
            if rng.random() < 0.5:
                new.on_finished(jobs_new[jid], ran, now)
                ref.on_finished(jobs_ref[jid], ran, now)
            else:
                new.on_suspended(jobs_new[jid], ran, now)
                ref.on_suspended(jobs_ref[jid], ran, now)
                new.push(jobs_new[jid], now)
                ref.push(jobs_ref[jid], now)
        elif op < 0.85 and len(new):
            jid = rng.choice([j.id for j in ref.jobs(now)])
            assert (new.remove(jid) or Job(id="-", agent="", arrival=0)).id == (
                ref.remove(jid) or Job(id="-", agent="", arrival=0)
            ).id
        p1, p2 = new.peek(now), ref.peek(now)
        assert (p1 and p1.id) == (p2 and p2.id), step
        assert [j.id for j in new.jobs(now)] == [j.id for j in ref.jobs(now)], step
        run_new = [RunningJob(jobs_new[i], t) for i, t in sorted(running.items())]
        run_ref = [RunningJob(jobs_ref[i], t) for i, t in sorted(running.items())]
        free = rng.choice([0, 0, 1])
        assert new.preempt(run_new, now, free_slots=free) == ref.preempt(run_ref, now, free_slots=free), step
        assert new.next_preemption(run_new, now) == ref.next_preemption(run_ref, now), step
        for j in list(jobs_new.values())[-5:]:
            assert new.backend_priority(j, now) == ref.backend_priority(jobs_ref[j.id], now)
