"""Circuit breaker per backend: a failing backend is taken out for a while, then probed back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    """closed -> (threshold consecutive failures) -> open -> (cooldown) -> half_open: one probe call;
    its success closes the breaker, its failure opens it again with a doubled cooldown."""

    threshold: int = 3
    cooldown_s: float = 2.0
    max_cooldown_s: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    current_cooldown_s: float = 0.0

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        if now - self.opened_at >= self.current_cooldown_s:
            return "half_open"
        return "open"

    def allows(self, now: float) -> bool:
        st = self.state(now)
        return st == "closed" or (st == "half_open" and not self.probing)

    def on_dispatch(self, now: float) -> None:
        if self.state(now) == "half_open":
            self.probing = True

    def on_success(self) -> None:
        self.failures, self.opened_at, self.probing, self.current_cooldown_s = 0, None, False, 0.0

    def on_failure(self, now: float, *, hard: bool = False) -> None:
        """`hard`: the backend is unreachable (connection refused), so open at once."""
        self.failures += 1
        if self.probing or hard or self.failures >= self.threshold:
            was_open = self.opened_at is not None
            self.current_cooldown_s = (
                min(self.current_cooldown_s * 2, self.max_cooldown_s) if was_open else self.cooldown_s
            )
            self.opened_at = now
            self.probing = False

    def reopens_at(self) -> float | None:
        return None if self.opened_at is None else self.opened_at + self.current_cooldown_s
