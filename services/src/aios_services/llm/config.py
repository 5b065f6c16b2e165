"""The LLM catalogue: models, their kind, backends, capacities and capabilities (a TOML file).

Where the file is: `AIOS_LLM_CONFIG` (the service settings; `aios up` writes `$AIOS_HOME/llm.toml`).
Secrets never live in the file: a backend names the environment variable that holds its API key
(`api_key_env = "OPENAI_API_KEY"`), resolved once at start. A bad file, or a named variable that is
not set, is a `ConfigError` at start whose message names the offending key.

```toml
[models."llama3:8b"]                    # kind = "chat" (default) or "embedding"
[[models."llama3:8b".backends]]
name = "vllm-a"
base_url = "http://10.0.0.5:8000/v1"
slots = 64                              # the ceiling with `adaptive`
adaptive = true                         # concurrency from the engine's /metrics (llm/capacity.py)
capabilities = { continue_partial = true, priority = true }

[[models."llama3:8b".backends]]
name = "openai"
base_url = "https://api.openai.com/v1"
model = "gpt-4o-mini"                   # the name at the backend
api_key_env = "OPENAI_API_KEY"
rpm = 500
tpm = 200000
```
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ModelKind = Literal["chat", "embedding"]


class Capabilities(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
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
    base_url: str = Field(
        pattern=r"^https?://", description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."
    )
    model: str | None = Field(None, description="Model name at the backend (default: the model key).")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Environment variable holding the API key."
    )
    slots: int = Field(8, ge=1, le=100_000, description="Concurrent requests the backend serves well.")
    ahead: int = Field(
        0,
        ge=0,
        le=100_000,
        description="Requests sent beyond `slots`, to wait in the engine's own queue, so that a slot"
        " freed at the end of an engine step is refilled at the next one (continuous batching) rather"
        " than a kernel round trip later, which can miss a step. 1 to slots/8 for vLLM-like engines;"
        " 0 (never more than `slots` at the backend) for APIs that refuse what exceeds a concurrency.",
    )
    rpm: int | None = Field(None, ge=1, description="Requests per minute limit.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute limit.")
    adaptive: bool = Field(
        False,
        description="Adapt the concurrency sent here to the engine's own state (its Prometheus"
        " `/metrics`: preemptions, KV-cache usage), below `slots`, which becomes the ceiling: no"
        " hand-tuned `slots` for a vLLM-like engine. See llm/capacity.py.",
    )
    metrics_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Where the engine's metrics are (default: /metrics beside /v1).",
    )
    adaptive_interval_s: float = Field(0.5, gt=0, le=60, description="How often the metrics are read.")
    timeout_s: float = Field(600.0, gt=0, description="Upper bound of one backend call.")
    capabilities: Capabilities = Field(default_factory=Capabilities)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ModelKind = Field("chat", description="chat (llm.chat) or embedding (llm.embed).")
    backends: list[BackendConfig] = Field(
        min_length=1, description="Backends that serve the model; the scheduler picks one per call."
    )


class LlmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    models: dict[str, ModelConfig] = Field(default_factory=dict, description="Model name -> backends.")

    @model_validator(mode="after")
    def _unique_backend_names(self) -> LlmConfig:
        # Backend names key the scheduler's per-backend resources, so they are global.
        seen: set[str] = set()
        for model in self.models.values():
            for b in model.backends:
                if b.name in seen:
                    raise ValueError(f"backend name {b.name!r} is used twice")
                seen.add(b.name)
        return self


class ConfigError(Exception):
    """The LLM config file is wrong; the message names the key."""


def parse_config(text: str, source: str = "<llm config>") -> LlmConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    try:
        return LlmConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{source}: {key}: {first['msg']}") from exc


def load_config(path: Path) -> LlmConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the LLM config: {exc.strerror or exc}") from exc
    return parse_config(text, str(path))


def api_keys(cfg: LlmConfig, env: Mapping[str, str]) -> dict[str, str]:
    """Backend name -> API key, read from the variables the config names; a missing one is an error."""
    keys: dict[str, str] = {}
    for model_name, model in cfg.models.items():
        for i, b in enumerate(model.backends):
            if b.api_key_env is None:
                continue
            value = env.get(b.api_key_env)
            if not value:
                raise ConfigError(
                    f"models.{model_name}.backends.{i}.api_key_env: "
                    f"environment variable {b.api_key_env} is not set"
                )
            keys[b.name] = value
    return keys
