"""LLM service settings (environment, prefix `AIOS_`).

- `AIOS_LLM_CONFIG`: path of the TOML catalogue (see config.py; `aios up` writes `$AIOS_HOME/llm.toml`).
- API keys: each backend names its variable (`api_key_env`); it must be set when the service starts.
- `AIOS_MAX_CONCURRENCY`: exec requests one replica runs at once.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..runtime import ServiceSettings


class LlmSettings(ServiceSettings):
    llm_config: Path = Field(Path(".aios/llm.toml"), description="Models and backends (TOML).")
    max_concurrency: int = Field(1024, ge=1, description="Exec requests handled at once per replica.")
    catalog_refresh_s: float = Field(
        5.0, gt=0, description="How often this replica re-confirms the models it serves in the catalogue."
    )
