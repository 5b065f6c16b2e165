"""One instance of an agent program, as `aios run` starts it (`python -m
aios_services.cli.agent_runner FILE --task T --session S --result OUT.json`).

An agent program is a Python file with either `async def main(aios, task)` (returns the answer)
or a subclass of `aios_sdk.Agent` (run with the task). The result file says what happened: the
answer (or the error), the seconds, and the syscalls, errors and tokens the instance used.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import json
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from aios_sdk import AIOS, Agent


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"aios_agent_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"aios run: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def entry(module: ModuleType) -> Any:
    """The program's Agent subclass (one defined in it), else its `async def main(aios, task)`."""
    agents = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Agent) and v is not Agent and v.__module__ == module.__name__
    ]
    if agents:
        return agents[0]
    main = getattr(module, "main", None)
    if (
        main is not None
        and inspect.iscoroutinefunction(main)
        and len(inspect.signature(main).parameters) == 2
    ):
        return main
    raise SystemExit(
        "aios run: the program defines neither an Agent subclass nor `async def main(aios, task)`"
    )


async def run(path: Path, task: str, session: str) -> dict[str, Any]:
    target = entry(load(path))
    started = time.perf_counter()
    out: dict[str, Any] = {"session": session}
    async with AIOS.connect(session=session) as aios:
        try:
            if isinstance(target, type):
                result = await target(aios, session=session).run(task)
                out.update(answer=result.answer, steps=result.steps, tools=result.tool_calls)
            else:
                out["answer"] = await target(aios, task)
            out["status"] = "done"
        except Exception as exc:
            out.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
        out.update(seconds=round(time.perf_counter() - started, 3), **aios.counts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="aios-agent")
    ap.add_argument("file", type=Path)
    ap.add_argument("--task", required=True)
    ap.add_argument("--session", required=True)
    ap.add_argument("--result", type=Path, required=True)
    args = ap.parse_args()
    out = asyncio.run(run(args.file, args.task, args.session))
    tmp = args.result.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, default=str))
    tmp.replace(args.result)
    print(json.dumps(out, default=str))
    sys.exit(0 if out.get("status") == "done" else 1)


if __name__ == "__main__":
    main()
