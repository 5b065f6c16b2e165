"""Scheduling policies: exact dispatch orders on scripted traces, starvation bounds, and LAS vs FIFO.

Time is virtual throughout: the simulator (`policies.simulate`) drives push/pop/preempt and the
accounting hooks the way the scheduler service does, and the tests read what it recorded.
"""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError

from aios_services.scheduler.policies import (
    FifoPolicy,
    Job,
    LasConfig,
    LasPolicy,
    PriorityPolicy,
    RoundRobinPolicy,
    RunningJob,
    make_policy,
)
from aios_services.scheduler.policies.simulate import SimCall, SimResult, mixed_workload, simulate

POLICIES = ["fifo", "rr", "priority", "las"]


def job(job_id: str, arrival: float = 0.0, *, program: str = "", priority: int = 0, **kw: bool) -> Job:
    return Job(id=job_id, agent=program or job_id, program=program, arrival=arrival, priority=priority, **kw)


def seq(program: str, services: list[float], arrival: float = 0.0, *, think: float = 0.0) -> list[SimCall]:
    """A sequential program: each call issued `think` seconds after the previous one finished."""
    return [
        SimCall(program=program, service=s, arrival=arrival, after=None if i == 0 else think)
        for i, s in enumerate(services)
    ]


def fanout(program: str, services: list[float], arrival: float = 0.0) -> list[SimCall]:
    """A program that issues all its calls at once."""
    return [
        SimCall(program=program, service=s, arrival=arrival, with_previous=i > 0)
        for i, s in enumerate(services)
    ]


def waits_within_las_bound(result: SimResult, beta: float) -> list[str]:
    """Runs that break the LAS anti-starvation bound on one slot; empty when it holds.

    A job J queued at q whose program has attained A joins the top queue by q + beta*A at the
    latest; from then on only jobs queued before it (still waiting at q) and the run in progress
    can go first, each for at most the longest service S. So J starts by q + beta*A + (ahead+1)*S.
    """
    longest = max(run.ended - run.started for run in result.runs)
    broken = []
    for run in result.runs:
        attained = sum(
            r.ended - r.started for r in result.runs if r.program == run.program and r.ended <= run.queued
        )
        ahead = sum(
            1 for r in result.runs if r is not run and r.queued <= run.queued and r.started >= run.queued
        )
        bound = run.queued + beta * attained + (ahead + 1) * longest
        if run.started > bound + 1e-9:
            broken.append(f"{run.job_id} started {run.started:.2f} > bound {bound:.2f}")
    return broken


# -- construction ------------------------------------------------------------------------------------


def test_make_policy_defaults_to_las_and_builds_each_policy() -> None:
    assert isinstance(make_policy(), LasPolicy)
    assert [make_policy(name).name for name in POLICIES] == POLICIES
    rr = make_policy("rr", quantum=0.5)
    assert isinstance(rr, RoundRobinPolicy) and rr.config.quantum == 0.5
    assert LasConfig().thresholds == (2.0, 8.0, 32.0)


def test_config_errors_name_the_bad_key_or_name() -> None:
    with pytest.raises(ValidationError, match=r"las\.bogus"):
        make_policy("las", bogus=1)
    with pytest.raises(ValidationError, match=r"rr\.quantum"):
        make_policy("rr", quantum=0)
    with pytest.raises(ValidationError, match="lottery"):
        make_policy("lottery")


# -- queue mechanics common to every policy ----------------------------------------------------------


@pytest.mark.parametrize("name", POLICIES)
def test_remove_drops_a_waiting_job(name: str) -> None:
    policy = make_policy(name)
    for i, arrival in enumerate([0.0, 1.0, 2.0]):
        policy.push(job(f"j{i}", arrival), arrival)
    removed = policy.remove("j1")
    assert removed is not None and removed.id == "j1"
    assert policy.remove("j1") is None
    assert policy.remove("never") is None
    assert len(policy) == 2
    assert [j.id for j in policy.jobs(3.0)] == ["j0", "j2"]
    popped = [policy.pop(3.0), policy.pop(3.0), policy.pop(3.0)]
    assert [j.id if j else None for j in popped] == ["j0", "j2", None]
    assert len(policy) == 0
    # A removed job may be queued again (e.g. a redelivered syscall).
    policy.push(job("j1", 4.0), 4.0)
    again = policy.pop(4.0)
    assert again is not None and again.id == "j1"


@pytest.mark.parametrize("name", POLICIES)
def test_jobs_lists_the_pop_order(name: str) -> None:
    rng = random.Random(7)
    policy = make_policy(name)
    for i in range(30):
        t = float(i // 3)
        policy.push(job(f"j{i:02d}", t, program=f"p{i % 5}", priority=rng.randint(0, 3)), t)
    for i in range(10):  # some program history for LAS
        policy.on_finished(job(f"done{i}", 0.0, program=f"p{i % 5}"), float(i), 10.0)
    listed = [j.id for j in policy.jobs(12.0)]
    popped = []
    while (j := policy.pop(12.0)) is not None:
        popped.append(j.id)
    assert listed == popped and len(popped) == 30


@pytest.mark.parametrize("name", POLICIES)
def test_pushing_a_queued_job_twice_is_an_error(name: str) -> None:
    policy = make_policy(name)
    policy.push(job("a"), 0.0)
    with pytest.raises(ValueError, match="already queued"):
        policy.push(job("a"), 1.0)


@pytest.mark.parametrize("name", POLICIES)
def test_hooks_account_service_on_the_job(name: str) -> None:
    policy = make_policy(name)
    a = job("a")
    policy.push(a, 0.0)
    assert policy.pop(0.0) is a
    policy.on_suspended(a, 1.5, 1.5)
    policy.push(a, 1.5)
    assert policy.pop(1.5) is a
    policy.on_finished(a, 0.5, 2.0)
    assert a.attained == 2.0


@pytest.mark.parametrize("name", POLICIES)
def test_non_preemptible_jobs_are_never_preempted(name: str) -> None:
    # Long non-preemptible runs, then many urgent, short, fresh jobs: every policy would like to
    # suspend the runs (rr: quantum; priority: better by far), none may.
    calls = [SimCall(f"long{i}", 10.0, 0.0, priority=9, preemptible=False) for i in range(2)]
    calls += [SimCall(f"s{i}", 0.5, 1.0 + 0.5 * i, priority=0) for i in range(10)]
    result = simulate(make_policy(name), calls, slots=2)  # raises if a non-preemptible job is suspended
    assert result.suspended == []
    assert result.dispatches[:2] == ["long0#0", "long1#0"]
    running = [RunningJob(job("x", 0.0, priority=9, preemptible=False), 0.0)]
    policy = make_policy(name)
    policy.push(job("y", 5.0, priority=0), 5.0)
    assert policy.preempt(running, 100.0) == []


# -- fifo --------------------------------------------------------------------------------------------


def test_fifo_dispatches_in_arrival_order_ties_by_id() -> None:
    calls = [
        SimCall("a", 3.0, 0.0),
        SimCall("c", 1.0, 1.0),
        SimCall("b", 1.0, 1.0),
        SimCall("d", 0.5, 0.5),
        SimCall("e", 1.0, 2.0),
    ]
    result = simulate(FifoPolicy(), calls, slots=1)
    assert result.dispatches == ["a#0", "d#0", "b#0", "c#0", "e#0"]
    assert result.completion == {"a#0": 3.0, "d#0": 3.5, "b#0": 4.5, "c#0": 5.5, "e#0": 6.5}
    two = simulate(FifoPolicy(), calls, slots=2)
    assert two.dispatches == ["a#0", "d#0", "b#0", "c#0", "e#0"]
    assert two.completion["e#0"] == 4.0  # d ends 1.5, b 2.5, c 3.0 (slot of a busy until 3), e 3-4


def test_fifo_resumed_job_keeps_its_place() -> None:
    policy = FifoPolicy()
    a = job("a", 0.0)
    policy.push(a, 0.0)
    assert policy.pop(0.0) is a
    policy.push(job("b", 1.0), 1.0)
    policy.on_suspended(a, 2.0, 2.0)
    policy.push(a, 2.0)
    assert [j.id for j in policy.jobs(2.0)] == ["a", "b"]
    assert policy.preempt([RunningJob(job("c"), 0.0)], 100.0) == []


# -- rr ----------------------------------------------------------------------------------------------


def test_rr_preempts_after_the_quantum_and_alternates() -> None:
    result = simulate(make_policy("rr", quantum=2.0), [SimCall("A", 5.0, 0.0), SimCall("B", 3.0, 1.0)])
    # A 0-2 | B 2-4 | A 4-6 | B 6-7 done | A 7-8 done
    assert result.dispatches == ["A#0", "B#0", "A#0", "B#0", "A#0"]
    assert result.suspended == ["A#0", "B#0", "A#0"]
    assert [(r.started, r.ended) for r in result.runs] == [(0, 2), (2, 4), (4, 6), (6, 7), (7, 8)]
    assert result.completion == {"B#0": 7.0, "A#0": 8.0}


def test_rr_lone_job_keeps_its_slot() -> None:
    result = simulate(make_policy("rr", quantum=1.0), [SimCall("A", 10.0, 0.0), SimCall("B", 1.0, 20.0)])
    assert result.suspended == []
    assert result.completion == {"A#0": 10.0, "B#0": 21.0}


def test_rr_simultaneous_expiries_do_not_cascade() -> None:
    calls = [SimCall("A", 5.0, 0.0), SimCall("B", 5.0, 0.0), SimCall("C", 3.0, 1.0)]
    result = simulate(make_policy("rr", quantum=2.0), calls, slots=2)
    # t=2: A and B are both over quantum and C waits: only A (longest-running, then id) yields; the
    # just-suspended A does not in turn preempt B. t=4: B's next slice boundary, A has waited since
    # 2, so B yields to A. C ends at 5, B resumes in its slot.
    assert result.dispatches == ["A#0", "B#0", "C#0", "A#0", "B#0"]
    assert result.suspended == ["A#0", "B#0"]
    assert result.completion == {"C#0": 5.0, "B#0": 6.0, "A#0": 7.0}


def test_rr_fresh_arrival_preempts_a_run_already_past_its_quantum() -> None:
    policy = RoundRobinPolicy()
    running = [RunningJob(job("old"), 0.0), RunningJob(job("new"), 9.0)]
    assert policy.preempt(running, 10.0) == []  # nothing waits
    assert policy.next_preemption(running, 10.0) is None
    policy.push(job("x", 10.0), 10.0)
    assert policy.preempt(running, 10.0, free_slots=1) == []  # x takes the free slot instead
    assert policy.preempt(running, 10.0) == ["old"]
    assert policy.next_preemption(running, 10.0) == 11.0  # new's quantum ends at 9 + 2


# -- priority ----------------------------------------------------------------------------------------


def test_priority_orders_by_priority_then_arrival_and_preempts_for_a_better_job() -> None:
    calls = [
        SimCall("low", 2.0, 0.0, priority=5),
        SimCall("high", 1.0, 0.5, priority=0),
        SimCall("mid", 1.0, 0.5, priority=3),
        SimCall("mid2", 1.0, 0.6, priority=3),
    ]
    result = simulate(make_policy("priority", aging_rate=0.1, margin=1.0), calls)
    # high suspends low at 0.5; both mids go before low, which had only aged 0.05 levels.
    assert result.dispatches == ["low#0", "high#0", "mid#0", "mid2#0", "low#0"]
    assert result.suspended == ["low#0"]
    assert result.completion == {"high#0": 1.5, "mid#0": 2.5, "mid2#0": 3.5, "low#0": 5.0}


def test_priority_margin_stops_preemption_between_near_equals() -> None:
    policy = PriorityPolicy()
    running = [RunningJob(job("r", 0.0, priority=1), 0.0)]
    policy.push(job("w", 0.0, priority=1), 0.0)
    assert policy.preempt(running, 50.0) == []  # both age alike: never better by the margin
    policy.push(job("urgent", 50.0, priority=-4), 50.0)
    # r has aged 5 levels while queued and running (1 - 0.1 * 50 = -4): urgent only ties with it.
    assert policy.preempt(running, 50.0) == []
    policy.push(job("very", 50.0, priority=-5), 50.0)  # better by exactly the margin: preempts
    assert policy.preempt(running, 50.0) == ["r"]
    assert policy.backend_priority(job("b", 0.0, priority=3), 0.0) == 3


def test_priority_aging_bounds_the_wait_under_a_stream_of_urgent_jobs() -> None:
    # One slot; a priority-10 job and, from t=0, an urgent (priority 0) 1 s job every 0.5 s for a
    # minute: twice what the slot can serve, so without aging the low job waits for the whole
    # backlog. With aging rate a, jobs run in order of the virtual deadline queued + priority / a:
    # the low job's is 10 / a = 10 s, so only the 20 urgent jobs that arrived before t=10 go first,
    # and nothing urgent arriving later is better by the margin. It starts at 20 s exactly.
    stream = [SimCall(f"u{i:03d}", 1.0, 0.5 * i, priority=0) for i in range(121)]
    calls = [SimCall("low", 1.0, 0.0, priority=10), *stream]
    aging_rate = 1.0
    deadline = 0.0 + 10 / aging_rate
    ahead = sum(1 for c in stream if c.arrival + c.priority / aging_rate < deadline)
    result = simulate(make_policy("priority", aging_rate=aging_rate), calls)
    assert ahead == 20
    assert result.completion["low#0"] == ahead * 1.0 + 1.0
    assert result.suspended == []
    strict = simulate(make_policy("priority", aging_rate=0.0), calls)
    assert strict.completion["low#0"] == 122.0  # starved until the stream was served


# -- las ---------------------------------------------------------------------------------------------


def test_las_short_programs_finish_before_a_long_program_that_arrived_first() -> None:
    # "long" fans out six 1 s calls at t=0; three one-call programs arrive at 0.5.
    calls = [*fanout("long", [1.0] * 6), *(SimCall(f"s{i}", 0.5, 0.5) for i in range(3))]
    las = simulate(make_policy("las"), calls)
    # long stays in the top queue until it has attained 2 s (two calls), then the shorts go first.
    assert las.dispatches == [
        "long#0", "long#1", "s0#0", "s1#0", "s2#0", "long#2", "long#3", "long#4", "long#5",
    ]  # fmt: skip
    assert [las.program_completion[f"s{i}"] for i in range(3)] == [2.5, 3.0, 3.5]
    assert las.program_completion["long"] == 7.5
    fifo = simulate(make_policy("fifo"), calls)
    assert [fifo.program_completion[f"s{i}"] for i in range(3)] == [6.5, 7.0, 7.5]
    assert las.mean_response() < fifo.mean_response()


def test_las_orders_sequential_programs_by_attained_service() -> None:
    # Three sequential programs on one slot; "big" has run the most when the queue forms.
    calls = [*seq("big", [3.0, 1.0]), *seq("mid", [1.0, 1.0], 0.5), *seq("new", [1.0], 3.5)]
    result = simulate(make_policy("las", base_quantum=1.0, growth=2.0), calls)
    # Multi-level preemption (thresholds 1, 2, 4 s): at 1 big#0 passes 1 s (level 1) while mid#0
    # (level 0) waits: suspended. At 3 big#0, resumed at 2, passes 2 s (level 2): mid#1 (level 1)
    # takes the slot; at 3.5 new#0 (level 0) suspends mid#1. Then mid#1, then big's calls.
    assert result.dispatches == ["big#0", "mid#0", "big#0", "mid#1", "new#0", "mid#1", "big#0", "big#1"]
    assert result.completion == {"mid#0": 2.0, "new#0": 4.5, "mid#1": 5.0, "big#0": 6.0, "big#1": 7.0}


def test_las_promotes_a_job_that_waited_beta_times_its_program_service() -> None:
    policy = LasPolicy(LasConfig(beta=2.0))
    old = job("old-1", 0.0, program="old")
    policy.on_finished(old, 10.0, 10.0)  # program "old" attained 10 s: level 2 (8 <= 10 < 32)
    assert policy.program_attained("old") == 10.0
    policy.push(job("old-2", 10.0, program="old"), 10.0)
    policy.push(job("fresh", 15.0, program="fresh"), 15.0)
    assert policy.level(policy.jobs(15.0)[1], 15.0) == 2
    assert [j.id for j in policy.jobs(29.9)] == ["fresh", "old-2"]
    assert [j.id for j in policy.jobs(30.0)] == ["old-2", "fresh"]  # waited 20 = 2 * 10: promoted
    assert policy.backend_priority(policy.jobs(30.0)[0], 30.0) == 0
    # A running call of "old" (level 2) yields to the waiting level-0 jobs when no slot is free...
    assert policy.preempt([RunningJob(job("r", program="old"), 0.0)], 30.0) == ["r"]
    assert policy.preempt([RunningJob(job("r", program="old"), 0.0)], 30.0, free_slots=1) == []
    # ...but a call dispatched through promotion keeps its rank while it runs (no thrashing).
    promoted = policy.pop(30.0)
    assert promoted is not None and promoted.id == "old-2"
    assert policy.preempt([RunningJob(promoted, 30.0)], 30.5) == []


def test_las_forgets_idle_programs() -> None:
    policy = LasPolicy(LasConfig(forget_after=100.0))
    a = job("a1", 0.0, program="a")
    policy.push(a, 0.0)
    policy.pop(0.0)
    policy.on_finished(a, 50.0, 50.0)
    policy.push(job("b1", 60.0, program="b"), 60.0)  # a is idle but not for long enough
    assert policy.program_attained("a") == 50.0
    policy.push(job("b2", 151.0, program="b"), 151.0)  # 101 s idle: forgotten on the next sweep
    assert policy.program_attained("a") == 0.0
    assert policy.program_attained("b") == 0.0  # b never ran, but waits: kept
    assert "b" in policy._programs


def test_las_keeps_programs_with_work_in_flight() -> None:
    policy = LasPolicy(LasConfig(forget_after=10.0))
    a = job("a1", 0.0, program="a")
    policy.push(a, 0.0)
    policy.pop(0.0)
    policy.on_suspended(a, 5.0, 5.0)
    policy.push(a, 5.0)
    policy.pop(5.0)  # running again, for a long time
    policy.push(job("b1", 100.0, program="b"), 100.0)
    assert policy.program_attained("a") == 5.0


def test_las_one_long_program_among_a_stream_of_short_ones_does_not_starve() -> None:
    # Short one-call programs alone fill the slot exactly; the long program's calls would wait for
    # the whole stream under pure LAS. With anti-starvation each call starts within the bound.
    long_program = seq("long", [1.0] * 20)
    shorts = [SimCall(f"s{i:03d}", 0.4, 0.2 + 0.4 * i) for i in range(150)]
    calls = [*long_program, *shorts]
    result = simulate(make_policy("las", beta=2.0), calls)
    assert len(result.completion) == len(calls)
    assert waits_within_las_bound(result, beta=2.0) == []
    pure = simulate(make_policy("las", beta=math.inf), calls)
    assert waits_within_las_bound(pure, beta=2.0) != []

    def long_calls_done_during_the_stream(r: SimResult) -> int:
        return sum(1 for job_id, t in r.completion.items() if job_id.startswith("long#") and t < 60.0)

    # Pure LAS serves the long program only while it is in the top queue (its first 2 s); with
    # anti-starvation it keeps progressing, each call waiting about beta times what it already had.
    assert long_calls_done_during_the_stream(pure) == 2
    assert long_calls_done_during_the_stream(result) == 7


def test_las_many_long_programs_and_few_short_ones_nobody_starves() -> None:
    longs = [call for i in range(8) for call in seq(f"long{i}", [1.0] * 10)]
    shorts = [SimCall(f"s{i:02d}", 0.3, 1.1 + 3.0 * i) for i in range(25)]
    calls = [*longs, *shorts]
    result = simulate(make_policy("las"), calls)
    assert len(result.completion) == len(calls)
    assert waits_within_las_bound(result, beta=LasConfig().beta) == []
    short_runs = [run for run in result.runs if run.program.startswith("s")]
    short_waits = [run.started - run.queued for run in short_runs]
    fifo = simulate(make_policy("fifo"), calls)
    fifo_short_waits = [run.started - run.queued for run in fifo.runs if run.program.startswith("s")]
    # While the long programs are still in the top queue (their first 2 s each) a short program
    # queues behind them as under FIFO; once they have left it, a short one waits at most for the
    # call in progress. FIFO keeps every short one behind a full round of the long programs.
    late = [w for w, run in zip(short_waits, short_runs, strict=True) if run.queued > 45.0]
    assert late and max(late) <= 1.0
    assert min(fifo_short_waits) > 7.5
    assert sum(short_waits) < 0.6 * sum(fifo_short_waits)


# -- the point of LAS --------------------------------------------------------------------------------


def test_las_beats_fifo_on_mean_program_completion_for_a_mixed_workload() -> None:
    # Autellix-shaped mix (chat, tool use, fan-out tree search), Poisson arrivals offering exactly the
    # capacity of 4 slots. Seed 0 is the reported run; seeds 0-4 guard against a lucky draw.
    table: dict[str, list[tuple[float, float]]] = {name: [] for name in POLICIES}
    for seed in range(5):
        trace = mixed_workload(50, seed=seed, slots=4, load=1.0)
        for name in POLICIES:
            result = simulate(make_policy(name), trace, slots=4)
            assert len(result.program_completion) == 50
            table[name].append((result.mean_response(), result.percentile_response(99)))
    print("\n50 programs, 4 slots, load 1.0: program completion time (s), seed 0 | mean over seeds 0-4")
    for name, rows in table.items():
        (mean0, p990), n = rows[0], len(rows)
        print(
            f"  {name:9s} mean {mean0:6.2f}  p99 {p990:6.2f} | "
            f"mean {sum(m for m, _ in rows) / n:6.2f}  p99 {sum(p for _, p in rows) / n:6.2f}"
        )
    assert table["las"][0][0] < table["fifo"][0][0]
    assert sum(m for m, _ in table["las"]) < 0.95 * sum(m for m, _ in table["fifo"])


def test_heap_queue_head_is_the_pop_order_prefix_with_stale_entries() -> None:
    from aios_services.scheduler.policies.base import HeapQueue

    rng = random.Random(7)
    q = HeapQueue()
    ids = []
    for i in range(300):
        q.push((float(rng.randint(0, 20)),), Job(id=f"j{i}", agent="a", arrival=float(i)))
        ids.append(f"j{i}")
    for victim in rng.sample(ids, 120):  # stale entries stay in the heap until compaction
        q.remove(victim)
    for _ in range(30):
        q.pop()
    for k in (0, 1, 2, 7, 50, 150, 1000):
        assert [j.id for j in q.head(k)] == [j.id for j in q.ordered()[:k]]
