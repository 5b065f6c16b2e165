"""Quotas of agents, reserved at admission and settled at completion, in KV `AIOS_LIMITS` (so every
scheduler replica sees the same usage)."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Mapping

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from aios_schemas import AiosError, QuotaLeft

from ..runtime.kvcas import cas_update
from .settings import Period, Quota

WINDOW_S: dict[Period, float] = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


class Usage(BaseModel):
    """An agent's usage in one period, in KV `AIOS_LIMITS` under `usage.<agent>` (lifetime) or
    `usage.<agent>.<per>` (windowed; `window` is the window's number since the epoch)."""

    model_config = ConfigDict(extra="forbid")
    calls: int = 0
    tokens: int = 0
    window: int = 0


class Reservation(BaseModel):
    """What admission reserved for one syscall, kept in KV under `resv.<syscall id>` until the call
    is settled, so that a syscall redelivered after a scheduler crash is not charged twice."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    agent: str
    tokens: int
    windows: list[tuple[str, int]]  # (KV key, window number) of each period charged


def _key(agent: str, per: Period) -> str:
    return f"usage.{agent}" if per == "lifetime" else f"usage.{agent}.{per}"


def _window(per: Period, now: float) -> int:
    return 0 if per == "lifetime" else int(now // WINDOW_S[per])


class Quotas:
    """Quotas are *reserved* at admission (a call counts, and its token estimate is set aside,
    before it runs), so concurrent calls cannot overshoot; completion settles the estimate to the
    tokens really used. Every update is a compare-and-set, so replicas never lose each other's."""

    def __init__(self, kv: KeyValue, quotas: Mapping[str, Quota | list[Quota]]) -> None:
        self.kv = kv
        self.quotas = {k: v if isinstance(v, list) else [v] for k, v in quotas.items()}

    def quota(self, agent: str) -> list[Quota]:
        """The quotas of the first pattern that matches the agent."""
        for pattern, quotas in self.quotas.items():
            if fnmatch.fnmatchcase(agent, pattern):
                return quotas
        return []

    async def usage(self, agent: str, per: Period = "lifetime", now: float | None = None) -> Usage:
        try:
            entry = await self.kv.get(_key(agent, per))
        except KeyNotFoundError:
            return Usage()
        usage = Usage.model_validate_json(entry.value or b"{}")
        if usage.window != _window(per, time.time() if now is None else now):
            return Usage()
        return usage

    async def left(self, agent: str, now: float | None = None) -> list[QuotaLeft]:
        """Each period of the agent's quota with what its current window has used."""
        out = []
        for q in self.quota(agent):
            used = await self.usage(agent, q.per, now)
            out.append(
                QuotaLeft(
                    per=q.per, calls=q.calls, calls_used=used.calls, tokens=q.tokens, tokens_used=used.tokens
                )
            )
        return out

    async def reserve(
        self, syscall_id: str, agent: str, tokens: int, now: float | None = None
    ) -> Reservation | None:
        """Count one call and set `tokens` aside in every period of the agent's quota, or raise
        quota_exceeded (reserving nothing) if one of them is used up. Idempotent per syscall: a
        redelivered syscall gets the reservation it already has."""
        quotas = self.quota(agent)
        if not quotas:
            return None
        try:
            entry = await self.kv.get(_resv_key(syscall_id))
            return Reservation.model_validate_json(entry.value or b"")
        except KeyNotFoundError:
            pass
        now = time.time() if now is None else now
        done: list[tuple[str, int]] = []
        try:
            for q in quotas:
                key, window = _key(agent, q.per), _window(q.per, now)
                await cas_update(self.kv, key, _reserve(agent, q, window, tokens))
                done.append((key, window))
        except AiosError:
            for key, window in done:  # give back what the earlier periods reserved
                await cas_update(self.kv, key, _add(window, calls=-1, tokens=-tokens))
            raise
        r = Reservation(id=syscall_id, agent=agent, tokens=tokens, windows=done)
        await self.kv.put(_resv_key(syscall_id), r.model_dump_json().encode())
        return r

    async def settle(self, r: Reservation | None, used_tokens: int) -> None:
        """Replace the reserved estimate by what was used (the call itself stays counted)."""
        if r is None:
            return
        if used_tokens != r.tokens:
            for key, window in r.windows:
                await cas_update(self.kv, key, _add(window, calls=0, tokens=used_tokens - r.tokens))
        await self.kv.delete(_resv_key(r.id))


def _resv_key(syscall_id: str) -> str:
    return f"resv.{syscall_id}"


def _reserve(agent: str, q: Quota, window: int, tokens: int) -> Callable[[bytes | None], bytes]:
    def change(current: bytes | None) -> bytes:
        u = Usage.model_validate_json(current) if current else Usage(window=window)
        if u.window != window:  # a new window began: the old one's usage no longer counts
            u = Usage(window=window)
        span = "" if q.per == "lifetime" else f" this {q.per}"
        if q.calls is not None and u.calls + 1 > q.calls:
            raise AiosError(
                "quota_exceeded",
                f"agent {agent!r} used its {q.calls} calls{span}",
                details={"per": q.per, "calls": q.calls},
            )
        if q.tokens is not None and u.tokens >= q.tokens:
            raise AiosError(
                "quota_exceeded",
                f"agent {agent!r} used its {q.tokens} tokens{span}",
                details={"per": q.per, "tokens": q.tokens},
            )
        return Usage(calls=u.calls + 1, tokens=u.tokens + tokens, window=window).model_dump_json().encode()

    return change


def _add(window: int, *, calls: int, tokens: int) -> Callable[[bytes | None], bytes | None]:
    def change(current: bytes | None) -> bytes | None:
        u = Usage.model_validate_json(current) if current else None
        if u is None or u.window != window:  # that window is over: nothing to correct
            return None
        return (
            Usage(calls=max(0, u.calls + calls), tokens=max(0, u.tokens + tokens), window=window)
            .model_dump_json()
            .encode()
        )

    return change
