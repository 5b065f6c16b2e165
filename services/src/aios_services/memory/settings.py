"""Memory service settings (environment, prefix `AIOS_`).

- `AIOS_MEMORY_DB`: the service's DuckDB file (`aios up`: `$AIOS_HOME/memory.duckdb`).
- `AIOS_S3_ENDPOINT`, `AIOS_S3_ACCESS_KEY`, `AIOS_S3_SECRET_KEY`: where large values go (bucket
  `AIOS_MEMORY_BUCKET`, default `aios-memory`); without an endpoint every value stays in DuckDB.
- `AIOS_MEMORY_EMBEDDER`: `hashing` (default), `minilm` (local ONNX, `aios-services[minilm]`) or
  `http` (`AIOS_MEMORY_EMBED_URL`, `AIOS_MEMORY_EMBED_MODEL`, key in `AIOS_MEMORY_EMBED_KEY_ENV`).
- Working-set quota per agent: `AIOS_MEMORY_WORKING_RECORDS`, `AIOS_MEMORY_WORKING_BYTES`, and
  per-agent overrides `AIOS_MEMORY_QUOTAS='{"agent": {"records": 100, "bytes": 1000000}}'`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..runtime.worker import WorkerSettings


class AgentQuota(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    records: int = Field(ge=1, description="Records an agent keeps in the working set (RAM).")
    bytes: int = Field(ge=1, description="Bytes of text and metadata it keeps there.")


class MemorySettings(WorkerSettings):
    memory_db: Path = Field(Path(".aios/memory.duckdb"), description="The service's DuckDB file.")
    memory_bucket: str = Field("aios-memory", description="S3 bucket of large values.")
    s3_endpoint: str = Field("", description="S3 endpoint URL (empty: large values stay in DuckDB).")
    s3_access_key: str = Field("", description="S3 access key.")
    s3_secret_key: str = Field("", repr=False, description="S3 secret key.")
    memory_large_bytes: int = Field(
        32 * 1024, ge=1, description="A text larger than this (UTF-8 bytes) is stored in S3."
    )
    memory_embedder: Literal["hashing", "minilm", "http"] = Field("hashing", description="Embedder.")
    memory_hashing_dim: int = Field(256, ge=8, le=8192, description="Dimensions of the hashing embedder.")
    memory_embed_url: str = Field("", description="OpenAI-compatible base URL (…/v1) for `http`.")
    memory_embed_model: str = Field("", description="Embedding model name at that endpoint.")
    memory_embed_key_env: str = Field("", description="Environment variable holding its API key.")
    memory_working_records: int = Field(1000, ge=1, description="Default working-set records per agent.")
    memory_working_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="Default working-set bytes per agent."
    )
    memory_quotas: dict[str, AgentQuota] = Field(default_factory=dict, description="Per-agent overrides.")
    memory_lru_k: int = Field(2, ge=1, le=8, description="K of the LRU-K eviction.")
