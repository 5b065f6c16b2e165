"""`Agent`: a tool-using agent loop on the kernel's syscalls.

```python
from aios_sdk import AIOS, Agent

async with AIOS.connect() as aios:
    agent = Agent(aios, model="sim-llama-8b", instructions="You plan trips.", tools=["calc"])
    result = await agent.run("How many hours in 3 weeks?")
    print(result.answer, result.steps, result.usage.total_tokens)
```
Each step is one `llm.chat` with the tools offered; the tool calls the model asks for run as
syscalls (`tools.call`, or the agent's own `files.*`/`memory.*` for the SDK's tools), their results
go back to the model, until it answers or `max_steps` is reached. With `remember=True` the agent
recalls its past runs relevant to the task (`memory.search`) and records this one (`memory.add`).
Subclass to change `instructions`, `tools`, or override `prompt()` / `finish()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aios_schemas import ChatMessage, ToolDef, Usage

from .errors import NotFound
from .tools import assistant_message

if TYPE_CHECKING:
    from .client import AIOS

RUN_TAG = "agent-run"


@dataclass
class AgentResult:
    answer: str | None  # None: the step limit came first
    steps: int  # llm.chat calls made
    tool_calls: list[str] = field(default_factory=list)  # tool names, in order
    usage: Usage = field(default_factory=Usage)
    messages: list[ChatMessage] = field(default_factory=list)


class Agent:
    """A model, instructions and tools, run as syscalls (see the module's docstring)."""

    model: str = "sim-llama-8b"
    instructions: str = "You are a helpful agent. Use the tools when they help; answer briefly."
    tools: Sequence[str] | None = None  # names from `aios.tools.definitions()`; None: all of them
    max_steps: int = 8
    remember: bool = False
    recall: int = 3  # past runs recalled into the prompt (with `remember`)

    def __init__(
        self,
        aios: AIOS,
        *,
        model: str | None = None,
        instructions: str | None = None,
        tools: Sequence[str] | None = None,
        max_steps: int | None = None,
        remember: bool | None = None,
        session: str | None = None,
        name: str | None = None,
    ) -> None:
        self.aios = aios
        self.model = model or self.model
        self.instructions = instructions or self.instructions
        self.tools = self.tools if tools is None else tools
        self.max_steps = max_steps or self.max_steps
        self.remember = self.remember if remember is None else remember
        self.session = session
        self.name = name or type(self).__name__

    async def tool_definitions(self) -> list[ToolDef]:
        return await self.aios.tools.definitions(self.tools)

    async def prompt(self, task: str) -> list[ChatMessage]:
        """The conversation a run starts from: instructions, recalled past runs, the task."""
        messages = [ChatMessage(role="system", content=self.instructions)]
        if self.remember:
            try:
                hits = (await self.aios.memory.search(task, k=self.recall, session=None)).hits
            except NotFound:
                hits = []
            past = [h.record.text for h in hits if RUN_TAG in (h.record.tags or [])]
            if past:
                messages.append(
                    ChatMessage(role="system", content="Your past runs:\n" + "\n---\n".join(past))
                )
        messages.append(ChatMessage(role="user", content=task))
        return messages

    async def run(self, task: str) -> AgentResult:
        tools = await self.tool_definitions()
        messages = await self.prompt(task)
        result = AgentResult(answer=None, steps=0)
        for _ in range(self.max_steps):
            reply = await self.aios.llm.chat(self.model, messages, tools=tools or None, session=self.session)
            result.steps += 1
            result.usage = Usage(
                prompt_tokens=result.usage.prompt_tokens + reply.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens + reply.usage.completion_tokens,
                total_tokens=result.usage.total_tokens + reply.usage.total_tokens,
            )
            messages.append(assistant_message(reply))
            if not reply.tool_calls:
                result.answer = reply.content or ""
                break
            result.tool_calls += [c.function.name for c in reply.tool_calls]
            messages += await self.aios.tools.run_tool_calls(reply)
        result.messages = messages
        await self.finish(task, result)
        return result

    async def finish(self, task: str, result: AgentResult) -> None:
        """After a run: with `remember`, record it for later runs to recall."""
        if self.remember and result.answer is not None:
            await self.aios.memory.add(
                f"task: {task}\nanswer: {result.answer}", tags=[RUN_TAG], metadata={"agent": self.name}
            )
