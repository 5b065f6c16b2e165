"""LLM service settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..runtime import ServiceSettings


class LlmSettings(ServiceSettings):
    llm_config: Path = Field(Path(".aios/llm.toml"), description="Models and backends (TOML).")
    max_concurrency: int = Field(1024, ge=1, description="Exec requests handled at once per replica.")
