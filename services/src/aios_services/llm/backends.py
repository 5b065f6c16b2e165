"""One OpenAI-compatible backend: the `openai` client, and its failures as AIOS error codes."""

from __future__ import annotations

import os

import openai
from openai import AsyncOpenAI
from pydantic import JsonValue

from aios_schemas import AiosError

from .config import BackendConfig


class Backend:
    def __init__(self, model: str, cfg: BackendConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.name = cfg.name
        self.remote_model = cfg.model or model
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        # Retries are the kernel's job (fallback across backends, rate limits), not the client's.
        self.client = AsyncOpenAI(
            base_url=cfg.base_url, api_key=key or "not-needed", max_retries=0, timeout=cfg.timeout_s
        )

    async def close(self) -> None:
        await self.client.close()


def translate(exc: Exception, backend: str) -> AiosError:
    """Map an `openai` client failure to an AIOS error; `retryable` means another backend may serve."""
    details: dict[str, JsonValue] = {"backend": backend}
    if isinstance(exc, openai.APIConnectionError):  # also APITimeoutError
        return AiosError("backend_unavailable", f"{backend}: {type(exc).__name__}: {exc}", details=details)
    if isinstance(exc, openai.APIStatusError):
        details["status"] = exc.status_code
        text = f"{backend}: HTTP {exc.status_code}: {exc.message}"
        if exc.status_code == 429:
            retry_after = exc.response.headers.get("retry-after")
            if retry_after:
                details["retry_after"] = retry_after
            return AiosError("rate_limited", text, details=details)
        if exc.status_code >= 500 or exc.status_code == 408:
            return AiosError("backend_unavailable", text, details=details)
        if exc.status_code in (400, 422):
            return AiosError("invalid_request", text, details=details)
        return AiosError("backend_error", text, details=details)
    return AiosError("backend_error", f"{backend}: {type(exc).__name__}: {exc}", details=details)
