"""An agent framework from the package index (the OpenAI Agents SDK), unchanged except for its
client's `base_url` and key, running a tool-using agent through the gateway: every model call is
a syscall of the agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import agents  # openai-agents, a dev dependency: a missing one fails here, loudly
import pytest
from openai import AsyncOpenAI

from aios_services.cli.procs import free_port
from aios_services.sim.runner import run_sim
from tests.integration.test_gateway import MODEL, gateway_service, key
from tests.kernel import Kernel, running_kernel


@pytest.fixture
async def stack(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[Kernel, str]]:
    # No tool call by chance: only the one the prompt asks for, then an answer.
    async with run_sim("fixed", models=(MODEL,), decode_ms=1.0, tool_call_probability=0.0) as sim:
        port = free_port()
        models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 8}]}
        extra = {"gateway": gateway_service(port)}
        async with running_kernel(nats_url, tmp_path, models, extra=extra) as k:  # type: ignore[arg-type]
            yield k, f"http://127.0.0.1:{port}/v1"


async def test_openai_agents_sdk_runs_a_tool_using_agent_through_the_gateway(
    stack: tuple[Kernel, str],
) -> None:
    k, url = stack
    agents.set_tracing_disabled(True)  # its traces would go to OpenAI's servers
    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return "sunny"

    model = agents.OpenAIChatCompletionsModel(
        model=MODEL, openai_client=AsyncOpenAI(base_url=url, api_key=key(k), max_retries=0)
    )
    agent = agents.Agent(
        name="forecaster", instructions="Answer about the weather.", tools=[get_weather], model=model
    )
    result = await agents.Runner.run(agent, "What is the weather in Oslo? [sim:tool=get_weather]")
    assert len(asked) == 1  # the model's tool call ran once, through the framework
    assert isinstance(result.final_output, str) and result.final_output
