"""Requests/min and tokens/min limits of a backend, shared by every scheduler replica.

A token bucket per backend kept in NATS KV (bucket AIOS_LIMITS, key `rate.<backend>`), updated
with compare-and-set on the entry's revision, so two replicas never both spend the same budget.
"""

from __future__ import annotations

import time

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from aios_schemas import BackendEntry
from aios_schemas.catalog import model_key


class Bucket(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: float
    tokens: float
    ts: float


class RateLimiter:
    def __init__(self, kv: KeyValue, backend: BackendEntry) -> None:
        self.kv = kv
        self.backend = backend
        self.key = "rate." + model_key(backend.name).removeprefix("model.")

    def _refill(self, b: Bucket, now: float) -> Bucket:
        dt = max(0.0, now - b.ts)
        rpm, tpm = self.backend.rpm, self.backend.tpm
        return Bucket(
            requests=min(float(rpm), b.requests + dt * rpm / 60.0) if rpm else 0.0,
            tokens=min(float(tpm), b.tokens + dt * tpm / 60.0) if tpm else 0.0,
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
        for _ in range(20):  # CAS retries under contention from other replicas
            now = time.time()
            try:
                entry = await self.kv.get(self.key)
                assert entry.value is not None
                bucket, revision = Bucket.model_validate_json(entry.value), entry.revision
            except KeyNotFoundError:
                bucket, revision = Bucket(requests=float(rpm or 0), tokens=float(tpm or 0), ts=now), None
            bucket = self._refill(bucket, now)
            wait = 0.0
            if rpm and bucket.requests < 1.0:
                wait = max(wait, (1.0 - bucket.requests) * 60.0 / rpm)
            if tpm and bucket.tokens < tokens:
                wait = max(wait, (tokens - bucket.tokens) * 60.0 / tpm)
            if wait > 0:
                return wait
            spent = Bucket(
                requests=bucket.requests - (1.0 if rpm else 0.0),
                tokens=bucket.tokens - (tokens if tpm else 0.0),
                ts=now,
            )
            try:
                if revision is None:
                    await self.kv.create(self.key, spent.model_dump_json().encode())
                else:
                    await self.kv.update(self.key, spent.model_dump_json().encode(), last=revision)
                return 0.0
            except KeyWrongLastSequenceError:
                continue
            except Exception as exc:  # create() on an existing key raises a generic API error
                if "wrong last sequence" in str(exc).lower() or "exists" in str(exc).lower():
                    continue
                raise
        return 0.05
