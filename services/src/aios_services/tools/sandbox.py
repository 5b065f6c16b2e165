"""Where tool functions run: worker processes outside the service (`tools.runner`), so a tool that
crashes, hangs or eats memory takes only its worker down, and the service keeps serving.

Choice: a pool of reusable worker processes, one call at a time each, rather than a process per
call. Measured here (`python -m bench.tools_bench`, 2 cores): a call in a new worker process takes
~47 ms (interpreter start and imports), a call to a warm worker 0.13 ms at p50 (0.3-0.6 ms p99);
the pool keeps `spare` workers started ahead so a call rarely waits for one. A worker is killed (its whole
process group) and replaced when its call passes its timeout (`deadline_exceeded`), dies (signal,
exit: `backend_error`), or hits its memory limit (RLIMIT_AS set in the worker for the call:
`backend_error` naming the limit); a worker whose caller went away (deadline, cancel) is killed
too, so nothing a call started outlives it. What a reused worker keeps between calls is the tools'
own module state: tools are the operator's code, not the agent's, so the pool isolates failures,
not tools from each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field

from pydantic import JsonValue

from aios_schemas import ERROR_CODES, AiosError

log = logging.getLogger(__name__)
_LINE_LIMIT = 64 * 1024 * 1024  # one answer line (the bus's max payload is the real bound)


@dataclass(eq=False)  # hashed by identity
class _Worker:
    proc: asyncio.subprocess.Process
    calls: int = 0

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # with whatever the tool started


@dataclass
class Pool:
    """Worker processes for tool functions; `run` one call in one of them."""

    spare: int = 2  # started ahead, waiting for calls
    max_idle: int = 8  # kept after a call; more are stopped
    python: str = sys.executable
    _idle: list[_Worker] = field(default_factory=list)
    _starting: set[asyncio.Task[None]] = field(default_factory=set)
    _busy: set[_Worker] = field(default_factory=set)
    _reaping: set[asyncio.Task[None]] = field(default_factory=set)
    stats: dict[str, int] = field(
        default_factory=lambda: {"started": 0, "killed": 0, "timeouts": 0, "crashes": 0, "memory": 0}
    )
    closed: bool = False

    async def _spawn(self) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "aios_services.tools.runner",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the service's log
            start_new_session=True,  # its own process group: killed whole
            limit=_LINE_LIMIT,
        )
        self.stats["started"] += 1
        return _Worker(proc)

    def _top_up(self) -> None:
        """Start workers in the background until `spare` wait idle (or are starting)."""
        while not self.closed and len(self._idle) + len(self._starting) < self.spare:
            task = asyncio.create_task(self._start_spare())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start_spare(self) -> None:
        try:
            w = await self._spawn()
        except OSError as exc:
            log.warning("could not start a tool worker: %s", exc)
            return
        if self.closed:
            w.kill()
        else:
            self._idle.append(w)

    async def start(self) -> None:
        self._top_up()
        if self._starting:
            await asyncio.wait(set(self._starting))

    async def _take(self) -> _Worker:
        while self._idle:
            w = self._idle.pop()
            if w.proc.returncode is None:
                return w
        try:
            return await self._spawn()
        except OSError as exc:  # out of processes, of memory, of file descriptors
            raise AiosError("backend_unavailable", f"no tool worker process could be started: {exc}") from exc

    def _give_back(self, w: _Worker) -> None:
        if self.closed or len(self._idle) >= self.max_idle:
            w.kill()
            self._reap(w)
        else:
            self._idle.append(w)

    def _reap(self, w: _Worker) -> None:
        reap = asyncio.get_running_loop().create_task(_reap(w))
        self._reaping.add(reap)
        reap.add_done_callback(self._reaping.discard)

    async def run(
        self,
        name: str,
        function: str,
        arguments: dict[str, JsonValue],
        *,
        timeout_s: float,
        memory_mb: int | None,
        options: dict[str, JsonValue] | None = None,
    ) -> JsonValue:
        """Run `function` (`module:attr`) with `arguments` in a worker; its JSON output, or AiosError."""
        if self.closed:
            raise AiosError("backend_unavailable", "the tools service is stopping")
        w = await self._take()
        self._top_up()
        self._busy.add(w)
        w.calls += 1
        reusable = False
        req = {
            "function": function,
            "arguments": arguments,
            "options": options or {},
            "memory_bytes": memory_mb * 1024 * 1024 if memory_mb else None,
        }
        try:
            assert w.proc.stdin is not None and w.proc.stdout is not None
            try:
                w.proc.stdin.write(json.dumps(req).encode() + b"\n")
                await w.proc.stdin.drain()
                line = await asyncio.wait_for(w.proc.stdout.readline(), timeout_s)
            except TimeoutError:
                self.stats["timeouts"] += 1
                raise AiosError(
                    "deadline_exceeded",
                    f"tool {name!r} ran past its timeout of {timeout_s:g}s and was killed",
                    details={"tool": name, "timeout_s": timeout_s},
                ) from None
            except (ConnectionError, ValueError):  # its stdin closed: it died; an oversized line
                line = b""
            if not line:
                code = await _exit_code(w)
                self.stats["crashes"] += 1
                raise AiosError(
                    "backend_error",
                    f"tool {name!r} crashed ({_describe(code)})",
                    details={"tool": name, "exit": code},
                )
            answer = json.loads(line)
            err = answer.get("error")
            if err is None:
                reusable = True
                result: JsonValue = answer["ok"]
                return result
            if err.get("memory"):
                self.stats["memory"] += 1
                raise AiosError(
                    "backend_error",
                    f"tool {name!r} exceeded its memory limit of {memory_mb} MB and was killed",
                    details={"tool": name, "memory_mb": memory_mb},
                )
            reusable = True  # the tool raised: the worker itself is fine
            code = err.get("code")
            raise AiosError(
                code if code in ERROR_CODES else "backend_error",
                f"tool {name!r} failed: {err.get('message', '')}"[:2000],
                details={"tool": name},
            )
        finally:
            self._busy.discard(w)
            if reusable:
                self._give_back(w)
            else:  # timed out, crashed, out of memory, or its caller went away mid-call
                self.stats["killed"] += 1
                w.kill()
                self._reap(w)

    async def close(self) -> None:
        self.closed = True
        for t in list(self._starting):
            t.cancel()
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        for w in workers:
            if w.proc.stdin is not None:
                w.proc.stdin.close()  # an idle worker ends at EOF
        for w in workers:
            try:
                await asyncio.wait_for(w.proc.wait(), 2)
            except TimeoutError:
                w.kill()
                await w.proc.wait()
        if self._reaping:
            await asyncio.wait(set(self._reaping))

    def details(self) -> dict[str, JsonValue]:
        return {"idle": len(self._idle), "busy": len(self._busy), **self.stats}


async def _exit_code(w: _Worker) -> int | None:
    try:
        return await asyncio.wait_for(w.proc.wait(), 2)
    except TimeoutError:  # it closed its output but lives on: not a worker any more
        return None


async def _reap(w: _Worker) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(w.proc.wait(), 10)


def _describe(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
