"""The llm service: runs `llm.*` syscalls on OpenAI-compatible backends (vLLM, llama.cpp, OpenAI...)."""

from .config import ConfigError, LlmConfig, load_config, parse_config
from .handlers import Deps, LlmHandlers, Model
from .settings import LlmSettings

__all__ = [
    "ConfigError",
    "Deps",
    "LlmConfig",
    "LlmHandlers",
    "LlmSettings",
    "Model",
    "load_config",
    "parse_config",
]
