"""Hosted-API rate limits: requests and tokens per minute as token buckets, OpenAI-style 429s."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aios_services.sim.engine import Clock


class _Bucket:
    """Refills continuously at limit per window, so the wait for n units is exact ("try again in Nms")."""

    def __init__(self, limit: int, window_s: float, clock: Clock) -> None:
        self.limit = limit
        self.rate = limit / window_s if window_s > 0 else math.inf
        self.clock = clock
        self.level = float(limit)
        self.stamp = clock.now()

    def refill(self) -> None:
        now = self.clock.now()
        self.level = min(float(self.limit), self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, n: int) -> float:
        return 0.0 if self.level >= n else (n - self.level) / self.rate

    def reset_in(self) -> float:
        return (self.limit - self.level) / self.rate


@dataclass(frozen=True)
class Decision:
    """Outcome of one check: `error` is None when the request may run."""

    headers: dict[str, str]
    error: str | None = None
    error_type: str = "requests"
    retry_after_s: float = 0.0


class RateLimiter:
    """RPM and TPM limits of one model (0 disables a limit). The window is scaled by time_scale."""

    def __init__(self, *, rpm: int, tpm: int, model: str, window_s: float, clock: Clock) -> None:
        self.model = model
        self.requests = _Bucket(rpm, window_s, clock) if rpm else None
        self.tokens = _Bucket(tpm, window_s, clock) if tpm else None

    def check(self, tokens: int) -> Decision:
        """Take 1 request and `tokens` tokens (input + max output), or explain the 429."""
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.refill()
        if self.tokens is not None and tokens > self.tokens.limit:
            return Decision(
                headers=self._headers(),
                error=(
                    f"Request too large for {self.model} in organization org-sim on tokens per min (TPM): "
                    f"Limit {self.tokens.limit}, Requested {tokens}. The input or output tokens must be "
                    "reduced in order to run successfully."
                ),
                error_type="tokens",
            )
        checks = ((self.requests, 1, "requests", "RPM"), (self.tokens, tokens, "tokens", "TPM"))
        for bucket, amount, kind, label in checks:
            if bucket is None:
                continue
            wait = bucket.wait_for(amount)
            if wait > 0:
                used = math.ceil(bucket.limit - bucket.level)
                return Decision(
                    headers=self._headers(),
                    error=(
                        f"Rate limit reached for {self.model} in organization org-sim on {kind} per min "
                        f"({label}): Limit {bucket.limit}, Used {used}, Requested {amount}. "
                        f"Please try again in {format_duration(wait)}. (AIOS simulator)"
                    ),
                    error_type=kind,
                    retry_after_s=wait,
                )
        if self.requests is not None:
            self.requests.level -= 1
        if self.tokens is not None:
            self.tokens.level -= tokens
        return Decision(headers=self._headers())

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for bucket, kind in ((self.requests, "requests"), (self.tokens, "tokens")):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
                headers[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.reset_in())
        return headers


def format_duration(seconds: float) -> str:
    """OpenAI's (Go-style) durations: `644ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"
