"""A tool-using agent: the model picks tools (the kernel's `calc`, and the SDK's own files and
memory tools), each tool call runs as a syscall, results go back to the model until it answers.

    .venv/bin/aios up --detach
    .venv/bin/python examples/tool_agent.py "What is 17 * 23? [sim:tool=calc]"
    .venv/bin/aios run examples/tool_agent.py --task "Note the plan in plan.md" --concurrency 4

(`[sim:tool=NAME]` asks the engine simulator for that tool call; a real model decides itself.)
"""

from __future__ import annotations

import asyncio
import sys

from aios_sdk import AIOS, Agent


class Helper(Agent):
    model = "sim-llama-8b"
    instructions = "You help with numbers and notes. Use calc for arithmetic and files_write for notes."
    tools = ["calc", "files_write", "files_read", "memory_search"]
    max_steps = 4
    remember = True  # recall past runs from memory, and record this one


async def main(task: str) -> None:
    async with AIOS.connect() as aios:
        result = await Helper(aios).run(task)
    print(f"answer: {result.answer!r}")
    used = ", ".join(result.tool_calls) or "none"
    print(f"steps: {result.steps}, tools used: {used}, tokens: {result.usage.total_tokens}")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "What is 6 * 7? [sim:tool=calc]"))
