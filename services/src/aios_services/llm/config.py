"""The LLM catalogue: models, their backends, capacities and capabilities (a TOML file in the home).

A bad file is a clear error at start that names the offending key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Capabilities(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    streaming: bool = Field(True, description="Backend can stream tokens.")
    tools: bool = Field(True, description="Backend accepts OpenAI tools/tool_choice.")
    json_output: bool = Field(True, alias="json", description="Backend accepts response_format.")
    continue_partial: bool = Field(
        False, description="Backend continues a partial assistant message (vLLM continue_final_message)."
    )
    priority: bool = Field(False, description="Backend accepts a per-request `priority` (vLLM).")


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Unique backend name.")
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")
    model: str | None = Field(None, description="Model name at the backend (default: the model key).")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    slots: int = Field(8, ge=1, le=100_000, description="Concurrent requests the backend serves well.")
    rpm: int | None = Field(None, ge=1, description="Requests per minute limit.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute limit.")
    timeout_s: float = Field(600.0, gt=0, description="Upper bound of one backend call.")
    capabilities: Capabilities = Field(default_factory=Capabilities)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    backends: list[BackendConfig] = Field(min_length=1, description="Tried in order on failure.")


class LlmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    models: dict[str, ModelConfig] = Field(default_factory=dict, description="Model name -> backends.")

    @model_validator(mode="after")
    def _unique_backend_names(self) -> LlmConfig:
        seen: set[str] = set()
        for model in self.models.values():
            for b in model.backends:
                if b.name in seen:
                    raise ValueError(f"backend name {b.name!r} is used twice")
                seen.add(b.name)
        return self


class ConfigError(Exception):
    """The LLM config file is wrong; the message names the key."""


def load_config(path: Path) -> LlmConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return LlmConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {key}: {first['msg']}") from exc
