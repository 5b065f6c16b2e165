"""Capacity from the engine: a backend's usable concurrency, adapted to what the engine says.

A fixed `slots` is either too low (a wasted GPU) or too high: past the KV-cache budget, vLLM admits
prompts, then preempts running sequences as their outputs grow and recomputes them later, and the
whole engine slows down (thrashing). Where a backend exposes its state (vLLM's Prometheus
`/metrics`; the simulator the same), the llm service reads it every `adaptive_interval_s` and keeps
a *limit* on the requests the scheduler sends there, like TCP's congestion window:

- slow start: from a few requests, +1 per finished request (doubling per window, see `Aimd`)
  while the limit is in use and the engine stays healthy;
- additive increase: once congestion has been seen, +1 per window, on the same conditions;
- multiplicative decrease: halve on a preemption since the last reading (once per overload: not
  again while the requests sent under the old limit drain);
- hold while the KV cache's peak is nearly full (no preemption yet, but more would cause it).

The limit never exceeds `slots` (the operator's ceiling) nor goes below 1. It is published in the
catalogue (`BackendEntry.limit`); the scheduler dispatches at most `min(slots, limit) + ahead`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

log = logging.getLogger(__name__)

# vLLM's names (V1), and the older name of the KV usage gauge (vLLM before 0.10).
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PREEMPTIONS = "vllm:num_preemptions_total"
FINISHED = "vllm:request_success_total"
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


@dataclass(frozen=True)
class EngineLoad:
    running: float
    waiting: float
    kv_usage: float | None  # 0..1; None: the engine does not say
    preemptions: float | None  # counters since the engine started
    finished: float | None


def parse_metrics(text: str) -> EngineLoad:
    """The engine's load from Prometheus text (samples of one name summed over their labels: vLLM
    labels them by model and by finish reason)."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if math.isfinite(value):
            sums[m.group(1)] = sums.get(m.group(1), 0.0) + value
    if RUNNING not in sums:
        raise ValueError(f"no {RUNNING} in the engine's metrics: not a vLLM-like engine")
    kv = next((sums[n] for n in KV_USAGE if n in sums), None)
    return EngineLoad(sums[RUNNING], sums.get(WAITING, 0.0), kv, sums.get(PREEMPTIONS), sums.get(FINISHED))


class _Counter:
    """How much a counter grew since the last reading (0 after a reset: an engine restart)."""

    def __init__(self) -> None:
        self.last: float | None = None

    def delta(self, value: float | None) -> float:
        if value is None:
            return 0.0
        grew = value - self.last if self.last is not None and value >= self.last else 0.0
        self.last = value
        return grew


@dataclass
class Aimd:
    """The limit's arithmetic (no I/O: `update` takes one reading, returns the new limit).

    The clock is the engine's finished requests, like TCP's acknowledgements: the limit grows with
    them (by one per finished request in slow start, by one per window of `limit` finished requests
    after), while it is in use, without a preemption, and with the KV cache's peak usage over the
    current window below `kv_high`. The window's peak is the honest signal: a request's KV grows
    until it ends, so usage read right after admissions says little about where it goes. Without
    a finished-requests counter, each reading counts as a whole window finished.
    """

    ceiling: int
    start: int = 4
    kv_high: float = 0.92
    decrease: float = 0.5

    def __post_init__(self) -> None:
        self.limit = float(max(1, min(self.ceiling, self.start)))
        self.slow_start = True
        self.recovering = False  # since a decrease, until the engine holds no more than the limit
        self._preemptions = _Counter()
        self._finished = _Counter()
        self._window_done = 0.0  # requests finished in this window
        self._window_peak = 0.0  # the highest KV usage seen in it
        self._window_used = False  # the limit bound at some reading in it (more would be used)

    @property
    def value(self) -> int:
        return max(1, min(self.ceiling, int(self.limit)))

    def _new_window(self) -> None:
        self._window_done, self._window_peak, self._window_used = 0.0, 0.0, False

    def update(self, load: EngineLoad) -> int:
        preempted = self._preemptions.delta(load.preemptions) > 0
        done = self._finished.delta(load.finished) if load.finished is not None else float(self.value)
        self._window_done += done
        self._window_peak = max(self._window_peak, load.kv_usage or 0.0)
        self._window_used |= load.running + load.waiting >= self.value
        if self.recovering and load.running + load.waiting <= self.value:
            self.recovering = False
            self._new_window()
        if preempted and not self.recovering:
            # Once per overload, like TCP once per round trip: preemptions while the requests sent
            # under the old limit drain are the same overload, not a new one.
            self.limit = max(1.0, self.limit * self.decrease)
            self.slow_start = False
            self.recovering = True
            return self.value
        if self.recovering:
            return self.value
        if self._window_peak >= self.kv_high:
            self.slow_start = False  # at the edge: hold
        elif self._window_used and self.limit < self.ceiling:
            # TCP Reno's arithmetic, finished requests for acknowledgements: +1 per finished
            # request in slow start (doubling per window), +1 per window after.
            step = done if self.slow_start else done / self.limit
            self.limit = min(float(self.ceiling), self.limit + step)
        if self._window_done >= self.value:
            self._new_window()
        return self.value


def metrics_url(base_url: str) -> str:
    """vLLM serves `/metrics` beside `/v1`."""
    root = base_url.rstrip("/")
    return (root.removesuffix("/v1") or root) + "/metrics"


class CapacityProbe:
    """Reads one backend's metrics every `interval_s` and reports a changed limit.

    No limit (None: `slots` applies) until the first good reading, and again after `give_up`
    failed readings in a row: an engine that never says (a hosted API) or stopped saying is not
    held to a guess; calls to a dead one fail on their own (the breaker)."""

    def __init__(
        self,
        backend: str,
        url: str,
        aimd: Aimd,
        interval_s: float,
        on_change: Callable[[str, int | None], Awaitable[None]],
        give_up: int = 3,
    ) -> None:
        self.backend = backend
        self.url = url
        self.aimd = aimd
        self.interval_s = interval_s
        self.on_change = on_change
        self.give_up = give_up
        self.readings = 0
        self.failures = 0  # in a row
        self.limit: int | None = None  # what was last reported
        self.last_error: str | None = None

    async def read_once(self, session: aiohttp.ClientSession) -> None:
        timeout = aiohttp.ClientTimeout(total=max(1.0, 4 * self.interval_s))
        try:
            async with session.get(self.url, timeout=timeout) as resp:
                resp.raise_for_status()
                load = parse_metrics(await resp.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if self.last_error is None:
                log.warning("adaptive capacity of %s: cannot read %s: %s", self.backend, self.url, exc)
            self.last_error = str(exc) or type(exc).__name__
            self.failures += 1
            limit = None if self.failures >= self.give_up else self.limit
        else:
            self.last_error = None
            self.failures = 0
            self.readings += 1
            limit = self.aimd.update(load)
        if limit != self.limit:
            self.limit = limit
            await self.on_change(self.backend, limit)

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self.read_once(session)
            await asyncio.sleep(self.interval_s)
