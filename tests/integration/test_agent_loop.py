"""The SDK's Agent loop on the simulator, scripted to call a tool: the model picks the tool, the SDK
runs it as a syscall, feeds the result back, and stops on the answer; a step limit stops a model
that keeps calling tools; with `remember`, a later run recalls the earlier one through memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_sdk import Agent
from aios_services.sim.runner import run_sim
from tests.integration.memory_kernel import memory_service
from tests.integration.tools_kernel import tools_service
from tests.kernel import Kernel, running_kernel

MODEL = "sim-llama-8b"


@pytest.fixture
async def kernel_with_tools(nats_url: str, tmp_path: Path) -> AsyncIterator[Kernel]:
    # Tool calls only where the prompt asks for one (`[sim:tool=NAME]`), then an answer.
    async with run_sim("fixed", models=(MODEL,), decode_ms=1.0, tool_call_probability=0.0) as sim:
        models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 8}]}
        extra = {
            "tools": tools_service(),
            "memory": memory_service(tmp_path / "memory.duckdb", None, "unused"),
        }
        async with running_kernel(nats_url, tmp_path, models, extra=extra) as k:  # type: ignore[arg-type]
            yield k


async def test_agent_calls_a_tool_then_answers(kernel_with_tools: Kernel) -> None:
    async with kernel_with_tools.connect() as aios:
        agent = Agent(aios, model=MODEL, tools=["calc"], max_steps=4)
        result = await agent.run("What is six times seven? [sim:tool=calc]")
        assert result.tool_calls == ["calc"] and result.steps == 2
        assert result.answer  # the model's answer after reading the tool's result
        tool_messages = [m for m in result.messages if m.role == "tool"]
        assert len(tool_messages) == 1 and tool_messages[0].content  # the tool ran (or said why not)
        assert result.usage.total_tokens > 0


async def test_step_limit_and_memory_of_past_runs(kernel_with_tools: Kernel) -> None:
    async with kernel_with_tools.connect() as aios:

        class Forecaster(Agent):
            tools = ["calc"]
            remember = True
            max_steps = 1  # a tool call uses the only step: no answer

        limited = await Forecaster(aios, model=MODEL).run("Plan the budget [sim:tool=calc]")
        assert limited.answer is None and limited.steps == 1 and limited.tool_calls == ["calc"]

        first = await Forecaster(aios, model=MODEL, max_steps=3).run("Plan the budget for Oslo")
        assert first.answer is not None
        again = await Forecaster(aios, model=MODEL, max_steps=3).run("Plan the budget for Oslo")
        recalled = [m.content or "" for m in again.messages if m.role == "system"]
        assert any("Your past runs" in c and "Plan the budget for Oslo" in c for c in recalled)
