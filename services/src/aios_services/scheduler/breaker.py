"""Circuit breaker per backend: a failing backend is taken out for a while, then probed back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    """closed -> (threshold consecutive failures, or one `hard` one) -> open -> (cooldown) ->
    half_open: one probe call goes through; its success closes the breaker, its failure opens it
    again with a doubled cooldown (at most `max_cooldown_s`).

    A failure *event* is what counts, not each failed call: when a backend dies, every call it was
    running fails at about the same moment, and those calls (dispatched before the breaker last
    changed state) belong to the event that opened it. Only the probe's failure doubles the
    cooldown, so a backend back soon after dying is probed, and used, within one cooldown.
    All times are the caller's clock (monotonic), passed in: the breaker has none of its own.
    """

    threshold: int = 3
    cooldown_s: float = 2.0
    max_cooldown_s: float = 5.0
    failures: int = 0  # consecutive failures while closed
    opened_at: float | None = None
    changed_at: float = float("-inf")  # when it last opened or closed
    current_cooldown_s: float = 0.0
    probe: str | None = None  # the call let through to test a half-open backend
    opened: int = 0  # how many times it opened (failure events)

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        if now >= self.opened_at + self.current_cooldown_s:  # the same sum as reopens_at()
            return "half_open"
        return "open"

    def allows(self, now: float) -> bool:
        st = self.state(now)
        return st == "closed" or (st == "half_open" and self.probe is None)

    def on_dispatch(self, now: float, call: str) -> None:
        if self.probe is None and self.state(now) == "half_open":
            self.probe = call

    def on_success(self, now: float, call: str, dispatched: float) -> None:
        """`call`, sent at `dispatched`, was served: the backend works, unless that call was sent
        before the breaker opened (it may have finished just before the backend died)."""
        if self.opened_at is not None:
            if call != self.probe and dispatched < self.changed_at:
                return
            self.changed_at = now
        self.failures, self.opened_at, self.probe, self.current_cooldown_s = 0, None, None, 0.0

    def on_failure(self, now: float, call: str, dispatched: float, *, hard: bool = False) -> None:
        """`call`, sent at `dispatched`, failed on the backend. `hard`: the backend is unreachable
        (connection refused), so open at once."""
        if call == self.probe:  # the backend is still down: out again, for longer
            self.probe = None
            self._open(now, min(self.current_cooldown_s * 2, self.max_cooldown_s))
            return
        if dispatched < self.changed_at:  # sent before the last open/close: part of that event
            return
        if self.opened_at is not None:  # open: nothing new is sent but the probe
            return
        self.failures += 1
        if hard or self.failures >= self.threshold:
            self._open(now, min(self.cooldown_s, self.max_cooldown_s))

    def on_inconclusive(self, call: str) -> None:
        """`call` ended without saying whether the backend works (cancelled, deadline passed): if it
        was the probe, the next call may probe instead (a probe never stays out for good)."""
        if call == self.probe:
            self.probe = None

    def _open(self, now: float, cooldown: float) -> None:
        self.opened_at, self.changed_at, self.current_cooldown_s, self.failures = now, now, cooldown, 0
        self.opened += 1

    def reopens_at(self) -> float | None:
        return None if self.opened_at is None else self.opened_at + self.current_cooldown_s
