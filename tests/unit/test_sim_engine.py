"""The simulator's engine model (virtual clock: exact model times, no waiting) and its completion plans."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from typing import Any

import pytest

from aios_services.sim import textgen
from aios_services.sim.api import ChatRequest
from aios_services.sim.engine import Engine, SeqHandle, VirtualClock
from aios_services.sim.profiles import FIXED, H100_LLAMA8B, H100_TINY, EngineProfile

Spec = tuple[int, int]  # (prompt tokens, output tokens)


async def run_all(profile: EngineProfile, specs: Sequence[Spec]) -> tuple[Engine, list[SeqHandle]]:
    """Submit every request at t=0 and run the engine until all are done."""
    engine = Engine(profile, VirtualClock())
    engine.start()
    handles = [engine.submit(prompt_len=p, max_new=n) for p, n in specs]
    await asyncio.gather(*(h.wait_done() for h in handles))
    await engine.stop()
    return engine, handles


def makespan(handles: Sequence[SeqHandle]) -> float:
    return max(h.state.finish_time or 0.0 for h in handles) - min(h.state.arrival for h in handles)


def throughput(handles: Sequence[SeqHandle]) -> float:
    return sum(h.emitted for h in handles) / makespan(handles)


async def test_single_request_follows_the_step_formula() -> None:
    p = H100_LLAMA8B
    n_prompt, n_out = 1000, 10
    engine, [h] = await run_all(p, [(n_prompt, n_out)])
    ttft_ms = p.decode_ms + p.prefill_ms_per_token * n_prompt + p.prefill_quad_ms * n_prompt**2
    decode_ms = sum(
        p.decode_ms + p.per_seq_ms + p.per_ctx_token_ms * (n_prompt + i) for i in range(n_out - 1)
    )
    assert h.state.first_token_time is not None and h.state.finish_time is not None
    assert h.state.first_token_time * 1000 == pytest.approx(ttft_ms, rel=1e-9)
    assert h.state.finish_time * 1000 == pytest.approx(ttft_ms + decode_ms, rel=1e-9)
    assert h.emitted == n_out and engine.stats.generated_tokens == n_out
    assert engine.pool.num_used == 0  # finished requests free their blocks


async def test_chunked_prefill_splits_a_long_prompt_over_the_token_budget() -> None:
    p = H100_TINY.with_overrides(kv_tokens=100_000, max_model_len=100_000)
    engine, _ = await run_all(p, [(3000, 1)])
    assert engine.stats.steps == math.ceil(3000 / p.max_num_batched_tokens)


async def test_throughput_rises_with_concurrency_then_saturates_at_the_slot_limit() -> None:
    p = H100_TINY.with_overrides(kv_tokens=1_000_000, max_model_len=100_000)
    thr: dict[int, float] = {}
    for conc in (1, 2, 4, 8, 16, 32):
        engine, handles = await run_all(p, [(100, 64)] * conc)
        thr[conc] = throughput(handles)
        assert engine.stats.max_running_seen == min(conc, p.max_num_seqs)
    assert thr[2] > 1.7 * thr[1]
    assert thr[8] > 6 * thr[1]
    for conc in (16, 32):  # past the slots, more requests only queue
        assert thr[conc] == pytest.approx(thr[8], rel=0.1)


async def test_kv_overload_preempts_recomputes_and_lowers_goodput() -> None:
    specs = [(400, 400)] * 8  # 6400 tokens of context against a 4096-token KV budget
    small, small_handles = await run_all(H100_TINY, specs)
    roomy, roomy_handles = await run_all(H100_TINY.with_overrides(kv_tokens=100_000), specs)
    assert roomy.stats.preemptions == 0 and roomy.stats.recomputed_tokens == 0
    assert small.stats.preemptions > 0 and small.stats.recomputed_tokens > 0
    assert all(h.emitted == 400 for h in small_handles)  # every request still completes
    assert throughput(small_handles) < 0.9 * throughput(roomy_handles)
    # FCFS picks the most recently admitted as victim, so the first request is never delayed by it.
    assert small_handles[0].state.preempted_count == 0


async def test_preemption_without_prefix_caching_recomputes_everything() -> None:
    p = H100_TINY.with_overrides(enable_prefix_caching=False)
    engine, _ = await run_all(p, [(400, 400)] * 8)
    assert engine.stats.preemptions > 0 and engine.stats.prefix_cache_hit_tokens == 0


async def test_prefix_cache_hit_cuts_ttft_to_the_uncached_part() -> None:
    p = H100_LLAMA8B
    n = 2000
    hashes = list(range(1, n // 16 + 1))
    engine = Engine(p, VirtualClock())
    engine.start()
    first = engine.submit(prompt_len=n, max_new=4, block_hashes=hashes)
    await first.wait_done()
    second = engine.submit(prompt_len=n, max_new=4, block_hashes=hashes)
    await second.wait_done()
    other = engine.submit(prompt_len=n, max_new=4, block_hashes=[h + 10_000 for h in hashes])
    await other.wait_done()
    await engine.stop()

    def ttft_ms(h: SeqHandle) -> float:
        assert h.state.first_token_time is not None
        return (h.state.first_token_time - h.state.arrival) * 1000

    hit = (n - 1) // 16 * 16  # the last token is always recomputed
    assert second.state.cached_tokens == hit and other.state.cached_tokens == 0
    expected = p.decode_ms + p.prefill_ms_per_token * (n - hit) + p.prefill_quad_ms * (n**2 - hit**2)
    assert ttft_ms(second) == pytest.approx(expected, rel=1e-9)
    assert ttft_ms(second) < 0.5 * ttft_ms(first)
    assert ttft_ms(other) == pytest.approx(ttft_ms(first), rel=1e-9)


@pytest.mark.parametrize(("policy", "expected"), [("priority", [1, 3, 5]), ("fcfs", [5, 1, 3])])
async def test_scheduling_policy_orders_admission_when_slots_are_full(
    policy: str, expected: list[int]
) -> None:
    p = FIXED.with_overrides(max_num_seqs=1, scheduling_policy=policy)
    engine = Engine(p, VirtualClock())
    engine.start()
    blocker = engine.submit(prompt_len=10, max_new=50, priority=9)
    await blocker.wait_progress(0)  # it holds the only slot now
    order: list[int] = []

    async def track(priority: int) -> None:
        await engine.submit(prompt_len=10, max_new=5, priority=priority).wait_done()
        order.append(priority)

    tasks = [asyncio.create_task(track(prio)) for prio in (5, 1, 3)]
    await asyncio.gather(blocker.wait_done(), *tasks)
    await engine.stop()
    assert order == expected


async def test_cancel_frees_the_slot_and_blocks_at_once() -> None:
    engine = Engine(H100_TINY, VirtualClock())
    engine.start()
    handle = engine.submit(prompt_len=500, max_new=1000)
    await handle.wait_progress(2)
    assert engine.pool.num_used > 0 and len(engine.running) == 1
    handle.cancel()
    assert engine.pool.num_used == 0 and not engine.running and handle.done
    after = engine.submit(prompt_len=10, max_new=3)
    await after.wait_done()
    await engine.stop()
    assert engine.stats.cancelled == 1 and engine.stats.completed == 1


async def test_requests_longer_than_the_kv_budget_are_refused() -> None:
    engine = Engine(H100_TINY, VirtualClock())
    with pytest.raises(ValueError):
        engine.submit(prompt_len=4000, max_new=200)


# -- completion plans -------------------------------------------------------------------------


def chat(**fields: Any) -> ChatRequest:
    body: dict[str, Any] = {"model": "sim-llama-8b", "messages": [{"role": "user", "content": "hi"}]}
    return ChatRequest.model_validate({**body, **fields})


def continued(request: ChatRequest, partial: str, **fields: Any) -> ChatRequest:
    messages = [*request.messages, {"role": "assistant", "content": partial}]
    body = {**request.model_dump(), "messages": messages, **fields}
    return ChatRequest.model_validate(
        {**body, "continue_final_message": True, "add_generation_prompt": False}
    )


def test_plans_are_deterministic_and_sensitive_to_the_request() -> None:
    a = textgen.plan(chat(seed=1), FIXED)
    assert textgen.plan(chat(seed=1), FIXED) == a
    assert textgen.plan(chat(seed=2), FIXED).content != a.content
    assert textgen.plan(chat(seed=1), FIXED.with_overrides(seed=5)).content != a.content
    assert FIXED.min_output_tokens <= a.n_tokens <= FIXED.max_output_tokens
    assert a.n_tokens == len(a.pieces) and a.finish_reason == "stop"
    assert textgen.tokenize(a.content) == list(a.pieces)  # generated text re-tokenizes to itself


@pytest.mark.parametrize("fields", [{}, {"messages": [{"role": "user", "content": "go [sim:tokens=40]"}]}])
def test_partial_plus_continuation_equals_the_uninterrupted_answer_at_every_cut(
    fields: dict[str, Any],
) -> None:
    request = chat(**fields)
    full = textgen.plan(request, FIXED)
    text = full.content
    boundaries = [sum(len(p) for p in full.pieces[:k]) for k in range(len(full.pieces) + 1)]
    for cut in sorted({*boundaries, *range(0, len(text) + 1, 7)}):
        rest = textgen.plan(continued(request, text[:cut]), FIXED)
        assert text[:cut] + rest.content == text, cut
        assert rest.finish_reason == "stop"


def test_continuation_keeps_exact_lengths_under_ignore_eos() -> None:
    request = chat(ignore_eos=True, max_tokens=30)
    full = textgen.plan(request, FIXED)
    assert full.n_tokens == 30 and full.finish_reason == "length"
    partial = "".join(full.pieces[:12])
    rest = textgen.plan(continued(request, partial, max_tokens=18), FIXED)
    assert partial + rest.content == full.content and rest.n_tokens == 18


def test_continued_prompt_shares_the_prefix_cache_blocks_of_the_original() -> None:
    request = chat(messages=[{"role": "user", "content": "word " * 100 + "[sim:tokens=200]"}])
    full = textgen.plan(request, FIXED)
    partial = "".join(full.pieces[:80])
    resumed = textgen.plan(continued(request, partial), FIXED)
    shared = (len(full.prompt_tokens) + 80) // FIXED.block_size
    assert resumed.block_hashes[:shared] == full.block_hashes[:shared]


def test_stop_string_cuts_the_answer() -> None:
    full = textgen.plan(chat(), FIXED)
    stop = full.pieces[5].strip()
    cut = textgen.plan(chat(stop=[stop]), FIXED)
    assert stop not in cut.content and full.content.startswith(cut.content)
    assert cut.finish_reason == "stop"


SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 3, "maximum": 9},
            "x": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "flag": {"type": "boolean"},
            "unit": {"enum": ["c", "f"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 2},
            "opt": {"type": ["string", "null"]},
            "inner": {"$ref": "#/$defs/Inner"},
        },
        "required": ["n", "x", "flag", "unit", "tags", "inner"],
        "$defs": {"Inner": {"type": "object", "properties": {"k": {"const": 7}}, "required": ["k"]}},
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_tool_arguments_and_json_schema_outputs_validate(schema: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    for i in range(20):
        msgs = [{"role": "user", "content": f"case {i}"}]
        call = textgen.plan(chat(messages=msgs, tools=tools, tool_choice="required"), FIXED)
        assert call.tool_call is not None and call.finish_reason == "tool_calls"
        assert_valid(json.loads(call.tool_call.arguments), schema)
        fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
        assert_valid(
            json.loads(textgen.plan(chat(messages=msgs, response_format=fmt), FIXED).content), schema
        )


def assert_valid(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> None:
    """A small JSON-schema checker for the keywords the tests use (jsonschema is not installed)."""
    root = root or schema
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        schema = node
    if "const" in schema:
        assert value == schema["const"]
    if "enum" in schema:
        assert value in schema["enum"]
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if kinds:
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
            "null": lambda v: v is None,
        }
        assert any(checks[k](value) for k in kinds), (value, kinds)
    if isinstance(value, dict):
        assert set(schema.get("required", [])) <= value.keys()
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                assert_valid(value[key], sub, root)
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0)
        for item in value:
            assert_valid(item, schema.get("items", {}), root)
    if isinstance(value, str):
        assert schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 10**9)
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert value >= schema.get("minimum", -math.inf) and value <= schema.get("maximum", math.inf)
        assert value > schema.get("exclusiveMinimum", -math.inf)
