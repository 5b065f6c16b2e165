"""The console's one view of the kernel, shared by every open browser: polled from the services while
someone looks (not otherwise), and pushed to each page's server-sent-event stream on every change."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Mapping

from aios_schemas import AiosError, ModelEntry
from aios_schemas.explore import SeriesQuery, SyscallListQuery

from .ops import Operator
from .views import Snapshot, rate

log = logging.getLogger(__name__)


class Hub:
    def __init__(
        self,
        ops: Operator,
        models: Mapping[str, ModelEntry],
        *,
        every_s: float = 1.0,
        series_every_s: float = 5.0,
        window_s: float = 600.0,
        step_s: float = 10.0,
        idle_after_s: float = 15.0,
    ) -> None:
        self.ops = ops
        self.models = models
        self.every_s = every_s
        self.series_every_s = series_every_s
        self.window_s = window_s
        self.step_s = step_s
        self.idle_after_s = idle_after_s
        self.snapshot = Snapshot(models=models)
        self.version = 0
        self.watchers = 0  # open event streams
        self._last_asked = 0.0  # a page's last plain request
        self._changed = asyncio.Condition()
        self._wanted = asyncio.Event()
        self._finished: collections.deque[tuple[float, int]] = collections.deque(maxlen=6)
        self._series_at = 0.0
        self.closing = asyncio.Event()

    def touch(self) -> None:
        """Someone looks: keep the snapshot fresh for a while."""
        self._last_asked = time.monotonic()
        self._wanted.set()

    async def wait_change(self, seen: int, timeout: float) -> int:
        """The version after `seen` (or `seen` again after `timeout`, or when closing)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.version != seen or self.closing.is_set()), timeout
                )
            return self.version

    async def run(self) -> None:
        while True:
            if self.watchers == 0 and time.monotonic() - self._last_asked > self.idle_after_s:
                self._wanted.clear()
                await self._wanted.wait()
            began = time.monotonic()
            await self.refresh()
            await asyncio.sleep(max(0.0, self.every_s - (time.monotonic() - began)))

    async def refresh(self) -> None:
        s = self.snapshot
        problems: dict[str, str] = {}
        now = time.time()
        stats_task = asyncio.ensure_future(self.ops.stats())
        approvals_task = asyncio.ensure_future(self.ops.approvals())
        try:
            s.stats = await stats_task
            c = s.stats.counters
            self._finished.append(
                (time.monotonic(), sum(c.get(k, 0) for k in ("done", "failed", "cancelled")))
            )
            s.rate = rate(self._finished)
        except AiosError as exc:
            problems["scheduler"] = exc.message
        try:
            s.approvals = await approvals_task
        except AiosError as exc:
            problems["access"] = exc.message
        if time.monotonic() - self._series_at >= self.series_every_s:
            since = now - self.window_s
            try:
                s.series = (await self.ops.series(SeriesQuery(since=since, step_s=self.step_s))).points
                q = SyscallListQuery(state="failed", since=since, limit=10)
                s.errors = (await self.ops.syscalls(q)).syscalls
                self._series_at = time.monotonic()
            except AiosError as exc:
                problems["recorder"] = exc.message
        else:
            problems.update({k: v for k, v in s.problems.items() if k == "recorder"})
        s.problems = problems
        s.ts = now
        async with self._changed:
            self.version += 1
            self._changed.notify_all()

    async def close(self) -> None:
        self.closing.set()
        self._wanted.set()
        async with self._changed:
            self._changed.notify_all()
