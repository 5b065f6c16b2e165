"""`aios models`: what the running stack serves (the catalogue `aios up` wrote in the home), and
whether each backend answers `GET /v1/models`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ..llm.config import BackendConfig, ModelConfig, load_config
from .home import Home


class BackendView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Backend name.")
    base_url: str = Field(description="OpenAI-compatible base URL.")
    model: str = Field(description="Model name at the backend.")
    slots: int = Field(description="Concurrent requests the scheduler sends it at most.")
    rpm: int | None = Field(None, description="Requests per minute limit.")
    tpm: int | None = Field(None, description="Tokens per minute limit.")
    healthy: bool = Field(description="It answered GET /v1/models with 200.")
    detail: str = Field(description="What the probe saw.")


class ModelView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Model name agents use.")
    kind: str = Field(description="chat | embedding")
    backends: list[BackendView]


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    home: str
    config: str = Field(description="The catalogue file the llm service runs with.")
    models: list[ModelView] = Field(default_factory=list)


async def probe(
    client: httpx.AsyncClient, b: BackendConfig, model: str, env: Mapping[str, str]
) -> tuple[bool, str]:
    """Does the backend answer `GET {base_url}/models` (with its API key, if that is set here)?"""
    key = env.get(b.api_key_env) if b.api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = await client.get(b.base_url.rstrip("/") + "/models", headers=headers)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if r.status_code != 200:
        hint = f" (set {b.api_key_env} to probe with its key)" if b.api_key_env and not key else ""
        return False, f"HTTP {r.status_code}{hint}"
    try:
        ids = {m.get("id") for m in r.json().get("data", []) if isinstance(m, dict)}
    except (ValueError, AttributeError):
        return True, "ok (the model list is not OpenAI-shaped)"
    return True, "ok" if model in ids else f"ok, but it does not list {model!r}"


async def catalogue(home: Home, timeout: float = 2.0, env: Mapping[str, str] | None = None) -> Catalogue:
    """The home's catalogue with a probe of every backend (all at once, `timeout` each)."""
    env = os.environ if env is None else env
    cfg = load_config(home.llm_config)

    async def view(client: httpx.AsyncClient, name: str, m: ModelConfig) -> ModelView:
        results = await asyncio.gather(*(probe(client, b, b.model or name, env) for b in m.backends))
        backends = [
            BackendView(
                name=b.name,
                base_url=b.base_url,
                model=b.model or name,
                slots=b.slots,
                rpm=b.rpm,
                tpm=b.tpm,
                healthy=ok,
                detail=detail,
            )
            for b, (ok, detail) in zip(m.backends, results, strict=True)
        ]
        return ModelView(name=name, kind=m.kind, backends=backends)

    async with httpx.AsyncClient(timeout=timeout) as client:
        views = await asyncio.gather(*(view(client, n, m) for n, m in cfg.models.items()))
    return Catalogue(home=str(home.root), config=str(home.llm_config), models=list(views))
