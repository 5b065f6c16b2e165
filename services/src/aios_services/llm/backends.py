"""One OpenAI-compatible backend (its config and HTTP client), and its failures as AIOS error codes."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import aiohttp
from pydantic import JsonValue

from aios_schemas import AiosError

from .config import BackendConfig, ModelKind
from .http import BackendClient, BackendHTTPError


class Backend:
    """A backend of one model: its config and a pooled HTTP client. Retries and fallbacks are the
    scheduler's job (it knows capacity and rate limits): the client never retries on its own, which
    would hold a slot the scheduler believes free."""

    def __init__(
        self, model: str, kind: ModelKind, cfg: BackendConfig, *, api_key: str | None = None
    ) -> None:
        self.model = model
        self.kind = kind
        self.cfg = cfg
        self.name = cfg.name
        self.remote_model = cfg.model or model
        self.client = BackendClient(
            cfg.base_url, api_key=api_key, timeout_s=cfg.timeout_s, slots=cfg.slots + cfg.ahead
        )

    async def close(self) -> None:
        await self.client.close()


def translate(exc: BaseException, backend: str) -> AiosError:
    """Map a backend failure to an AIOS error; `details.backend` tells the scheduler whom to avoid."""
    details: dict[str, JsonValue] = {"backend": backend}
    if isinstance(exc, TimeoutError):  # aiohttp's own timeouts (the call's timeout_s, reads)
        return AiosError("backend_unavailable", f"{backend}: timed out", details=details)
    if isinstance(exc, aiohttp.ClientError | ConnectionError):
        # Refused, reset, or a response cut in the middle (also mid-stream).
        return AiosError("backend_unavailable", f"{backend}: {type(exc).__name__}: {exc}", details=details)
    if isinstance(exc, BackendHTTPError):
        status = exc.status
        details["status"] = status
        text = f"{backend}: HTTP {status}: {exc.message}"
        if status == 429:
            after = retry_after_s(exc.headers)
            if after is not None:
                details["retry_after_s"] = after
            return AiosError("rate_limited", text, details=details)
        if status >= 500 or status == 408:
            return AiosError("backend_unavailable", text, details=details)
        if status in (400, 413, 422):
            return AiosError("invalid_request", text, details=details)
        # 401/403 (bad key), 404 (backend does not serve that model): the operator's config is wrong.
        return AiosError("backend_error", text, details=details)
    return AiosError("backend_error", f"{backend}: {type(exc).__name__}: {exc}", details=details)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `retry-after` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
