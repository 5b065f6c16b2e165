"""Requests/min and tokens/min limits of a backend, shared by every scheduler replica.

A token bucket per backend kept in NATS KV (bucket AIOS_LIMITS, key `rate.<backend>`), updated
with compare-and-set on the entry's revision, so two replicas never both spend the same budget.
"""

from __future__ import annotations

import time

from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from aios_schemas import BackendEntry
from aios_schemas.catalog import model_key

from ..runtime.kvcas import CasContention, cas_update


class Bucket(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: float
    tokens: float
    ts: float


class RateLimiter:
    def __init__(self, kv: KeyValue, backend: BackendEntry, window_s: float = 60.0) -> None:
        self.kv = kv
        self.backend = backend
        self.window_s = window_s  # the "minute" of rpm/tpm
        self.key = "rate." + model_key(backend.name).removeprefix("model.")

    def _refill(self, b: Bucket, now: float) -> Bucket:
        dt = max(0.0, now - b.ts)
        rpm, tpm = self.backend.rpm, self.backend.tpm
        return Bucket(
            requests=min(float(rpm), b.requests + dt * rpm / self.window_s) if rpm else 0.0,
            tokens=min(float(tpm), b.tokens + dt * tpm / self.window_s) if tpm else 0.0,
            ts=now,
        )

    async def try_acquire(self, tokens: int) -> float:
        """Spend one request and `tokens` tokens if the budget has them: returns 0.0. Otherwise
        spends nothing and returns the seconds until the budget will have them."""
        rpm, tpm = self.backend.rpm, self.backend.tpm
        if not rpm and not tpm:
            return 0.0
        if tpm:
            tokens = min(tokens, tpm)  # a request larger than the whole budget waits for a full one
        wait = 0.0

        def spend(current: bytes | None) -> bytes | None:
            nonlocal wait
            now = time.time()
            full = Bucket(requests=float(rpm or 0), tokens=float(tpm or 0), ts=now)
            bucket = self._refill(Bucket.model_validate_json(current) if current else full, now)
            wait = 0.0
            if rpm and bucket.requests < 1.0:
                wait = max(wait, (1.0 - bucket.requests) * self.window_s / rpm)
            if tpm and bucket.tokens < tokens:
                wait = max(wait, (tokens - bucket.tokens) * self.window_s / tpm)
            if wait > 0:
                return None
            spent = Bucket(
                requests=bucket.requests - (1.0 if rpm else 0.0),
                tokens=bucket.tokens - (tokens if tpm else 0.0),
                ts=now,
            )
            return spent.model_dump_json().encode()

        try:
            await cas_update(self.kv, self.key, spend)
        except CasContention:
            return 0.05  # heavy contention: try again shortly
        return wait
