"""The adaptive limit's arithmetic and the engine metrics it reads (vLLM's Prometheus names)."""

from __future__ import annotations

import pytest

from aios_schemas import BackendEntry
from aios_services.llm.capacity import Aimd, EngineLoad, metrics_url, parse_metrics

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 12.0
vllm:num_requests_running{engine="1",model_name="llama"} 3.0
vllm:num_requests_waiting{engine="0",model_name="llama"} 2.0
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.75
vllm:num_preemptions_total{engine="0",model_name="llama"} 7.0
vllm:request_success_total{finished_reason="stop",model_name="llama"} 100.0
vllm:request_success_total{finished_reason="length",model_name="llama"} 20.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="llama"} 120.0
python_gc_objects_collected_total{generation="0"} NaN
"""


def test_vllm_metrics_are_read_and_summed_over_labels() -> None:
    load = parse_metrics(VLLM)
    assert load == EngineLoad(running=15.0, waiting=2.0, kv_usage=0.75, preemptions=7.0, finished=120.0)


def test_the_older_kv_gauge_name_is_read_and_missing_counters_are_none() -> None:
    load = parse_metrics("vllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.5\n")
    assert load == EngineLoad(running=1.0, waiting=0.0, kv_usage=0.5, preemptions=None, finished=None)


def test_metrics_without_the_running_gauge_are_refused() -> None:
    with pytest.raises(ValueError, match="not a vLLM-like engine"):
        parse_metrics("http_requests_total 5\n")


def test_metrics_url_sits_beside_v1() -> None:
    assert metrics_url("http://10.0.0.5:8000/v1") == "http://10.0.0.5:8000/metrics"
    assert metrics_url("http://10.0.0.5:8000/v1/") == "http://10.0.0.5:8000/metrics"
    assert metrics_url("http://h:1") == "http://h:1/metrics"


def load(running: float, *, kv: float = 0.1, preempted: float = 0, finished: float = 0) -> EngineLoad:
    return EngineLoad(running=running, waiting=0.0, kv_usage=kv, preemptions=preempted, finished=finished)


def test_slow_start_doubles_once_per_window_of_finished_requests() -> None:
    a = Aimd(ceiling=64)
    assert a.update(load(4, finished=0)) == 4
    assert a.update(load(4, finished=3)) == 4  # 3 of a window of 4 finished: not yet
    assert a.update(load(4, finished=4)) == 8
    assert a.update(load(8, finished=11)) == 8
    assert a.update(load(8, finished=12)) == 16


def test_an_unused_limit_does_not_grow() -> None:
    a = Aimd(ceiling=64)
    a.update(load(1, finished=0))
    assert a.update(load(1, finished=10)) == 4


def test_a_preemption_halves_once_per_overload_then_growth_is_additive() -> None:
    a = Aimd(ceiling=64, start=16)
    a.update(load(16, finished=0))
    assert a.update(load(16, preempted=1, finished=1)) == 8
    assert a.update(load(14, preempted=3, finished=3)) == 8  # the same overload draining: no more cuts
    assert a.update(load(8, preempted=3, finished=6)) == 8  # drained: a new window starts
    assert a.update(load(8, preempted=3, finished=14)) == 9  # +1, not doubled
    assert a.update(load(9, preempted=3, finished=23)) == 10


def test_a_nearly_full_kv_cache_holds_the_limit() -> None:
    a = Aimd(ceiling=64)
    a.update(load(4, finished=0))
    assert a.update(load(4, kv=0.95, finished=4)) == 4
    assert a.update(load(4, kv=0.5, finished=8)) == 5  # left slow start at the edge: +1 from now on


def test_the_limit_stays_between_one_and_the_ceiling() -> None:
    a = Aimd(ceiling=6)
    a.update(load(4, finished=0))
    assert a.update(load(4, finished=4)) == 6
    assert a.update(load(6, finished=10)) == 6
    for n in range(1, 10):
        a.update(load(6, preempted=n, finished=10))
        a.update(load(0, preempted=n, finished=10))
    assert a.value == 1


def test_without_a_finished_counter_each_reading_closes_a_window() -> None:
    a = Aimd(ceiling=64)
    no_counter = EngineLoad(running=4, waiting=0, kv_usage=0.1, preemptions=None, finished=None)
    assert a.update(no_counter) == 8


def test_an_engine_restart_resets_counters_without_a_false_preemption() -> None:
    a = Aimd(ceiling=64, start=8)
    a.update(load(8, preempted=50, finished=1000))
    assert (
        a.update(load(8, preempted=0, finished=0)) == 8
    )  # counters went down: a restart, not 50 preemptions


def test_the_scheduler_uses_the_lower_of_slots_and_limit_plus_ahead() -> None:
    assert BackendEntry(name="b", slots=64, ahead=1).usable == 65
    assert BackendEntry(name="b", slots=64, ahead=1, limit=8).usable == 9
    assert BackendEntry(name="b", slots=4, limit=8).usable == 4
