"""CPU of the `las` policy per dispatch cycle as the queue grows: the indexed policy against the scan
it replaced (kept as `tests/unit/las_reference.py`), in the same run; then every policy at 10 and
2,000 waiting (flat is the goal: a cycle at 2,000 within 1.5x of one at 10).

One cycle = preempt + next_preemption + pop + on_finished + push on one resource with 8 running;
programs of 4 jobs each. Run: `.venv/bin/python -m bench.las_policy` (part of `make bench`).
"""

from __future__ import annotations

import time

from aios_services.scheduler.policies import (
    Job,
    LasPolicy,
    Policy,
    RunningJob,
    parse_policy_config,
    policy_from_config,
)
from tests.unit.las_reference import ReferenceLasPolicy

CYCLES = 2000


def per_cycle_us(policy: Policy, waiting: int) -> float:
    for i in range(waiting):
        policy.push(Job(id=f"j{i}", agent="a", arrival=float(i), program=f"p{i // 4}"), float(i))
    running = [RunningJob(Job(id=f"r{i}", agent="a", arrival=0.0, program=f"q{i}"), 0.0) for i in range(8)]
    t = time.process_time()
    for k in range(CYCLES):
        now = 10_000.0 + k
        policy.preempt(running, now)
        policy.next_preemption(running, now)
        job = policy.pop(now)
        assert job is not None
        policy.on_finished(job, 0.5, now)
        policy.push(Job(id=f"n{k}", agent="a", arrival=now, program=job.program), now)
    return (time.process_time() - t) / CYCLES * 1e6


def main() -> None:
    print(f"las policy CPU per dispatch cycle (us), {CYCLES} cycles, 8 running")
    print(f"{'waiting':>8} {'scan':>10} {'indexed':>10}")
    for waiting in (10, 100, 2000):
        scan = per_cycle_us(ReferenceLasPolicy(), waiting)
        indexed = per_cycle_us(LasPolicy(), waiting)
        print(f"{waiting:>8} {scan:>10.1f} {indexed:>10.1f}")
    print("every policy, CPU per dispatch cycle (us)")
    print(f"{'policy':>8} {'10 waiting':>11} {'2000 waiting':>13} {'ratio':>6}")
    for name in ("fifo", "rr", "priority", "las"):
        few, many = (per_cycle_us(policy_from_config(parse_policy_config(name)), w) for w in (10, 2000))
        print(f"{name:>8} {few:>11.1f} {many:>13.1f} {many / few:>6.2f}")


if __name__ == "__main__":
    main()
