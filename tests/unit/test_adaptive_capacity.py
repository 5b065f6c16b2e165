"""The adaptive limit's arithmetic and the engine metrics it reads (vLLM's Prometheus names)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aios_schemas import BackendEntry
from aios_services.llm.capacity import Aimd, CapacityProbe, EngineLoad, metrics_url, parse_metrics

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


def test_slow_start_adds_one_per_finished_request() -> None:
    a = Aimd(ceiling=64)
    assert a.update(load(4, finished=0)) == 4
    assert a.update(load(4, finished=3)) == 7
    assert a.update(load(7, finished=4)) == 8
    assert a.update(load(8, finished=12)) == 16  # doubled over a window


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
    # Then about +1 per window (1/limit per finished request), never doubling again.
    grown = [a.update(load(a.value, preempted=3, finished=6 + 8 * n)) for n in (1, 2, 3)]
    assert grown == [9, 9, 10]


def test_a_nearly_full_kv_cache_holds_the_limit() -> None:
    a = Aimd(ceiling=64)
    a.update(load(4, finished=0))
    assert a.update(load(4, kv=0.95, finished=4)) == 4
    assert a.update(load(4, kv=0.5, finished=8)) == 5  # left slow start at the edge: +1 per window


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


async def test_no_limit_until_the_engine_says_and_none_again_once_it_stops_saying() -> None:
    answer: list[str | None] = ["vllm:num_requests_running 0\n"]

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=answer[0]) if answer[0] is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    reported: list[int | None] = []

    async def on_change(backend: str, limit: int | None) -> None:
        reported.append(limit)

    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        probe = CapacityProbe("b", str(server.make_url("/metrics")), Aimd(ceiling=64), 0.01, on_change)
        assert probe.limit is None
        await probe.read_once(session)
        assert reported == [4] and probe.limit == 4
        answer[0] = None  # the engine stops saying (or never did: a hosted API)
        for _ in range(3):
            await probe.read_once(session)
        assert reported == [4, None] and probe.limit is None and probe.last_error
