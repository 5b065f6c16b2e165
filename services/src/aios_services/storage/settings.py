"""Storage service settings (environment, prefix `AIOS_`).

- `AIOS_S3_ENDPOINT`, `AIOS_S3_ACCESS_KEY`, `AIOS_S3_SECRET_KEY`: the object store (`aios up` sets them).
- `AIOS_STORAGE_DB`: the service's DuckDB file (`aios up`: `$AIOS_HOME/storage.duckdb`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from ..runtime.worker import WorkerSettings


class StorageSettings(WorkerSettings):
    s3_endpoint: str = Field("http://127.0.0.1:8333", description="S3 endpoint the service uses.")
    s3_access_key: str = Field("", description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    s3_region: str = Field("us-east-1", description="S3 region (signatures name it).")
    s3_public_endpoint: str | None = Field(
        None,
        description="Where agents reach the object store, for presigned URLs (default: s3_endpoint).",
    )
    files_bucket: str = Field("aios-files", min_length=3, max_length=63, description="Bucket of the files.")
    storage_db: Path = Field(Path(".aios/storage.duckdb"), description="DuckDB file of the metadata.")
    inline_max_bytes: int = Field(
        256 * 1024,
        ge=0,
        le=700 * 1024,
        description="Reads of files up to this size answer inline; larger ones with a presigned URL"
        " (the reply must fit the bus's 1 MB max_payload, base64 included).",
    )
    max_file_bytes: int = Field(
        100 * 1024**3, ge=1, le=1024**4, description="Largest file (a multipart upload of at most 200 parts)."
    )
    part_size_bytes: int = Field(
        64 * 1024**2,
        ge=5 * 1024**2,
        le=5 * 1024**3,
        description="Part size of uploads (S3 bounds: 5 MiB to 5 GiB); larger for files over 200 parts.",
    )
    url_ttl_s: float = Field(900.0, gt=0, le=7 * 86400, description="Lifetime of presigned URLs.")
    search_text_max_bytes: int = Field(
        1024 * 1024, ge=0, description="Text files up to this size are indexed for search."
    )
    resend_window_s: float = Field(
        3600.0,
        gt=0,
        description="A mutating call sent again within this time after it ran (e.g. after a crash of"
        " this service) gets the version it made instead of making another.",
    )
    files_embedder: Literal["none", "hashing", "minilm"] = Field(
        "hashing",
        description="Embedder of text files for semantic search (the memory service's): hashing (no"
        " model, shared words only), minilm (local ONNX all-MiniLM-L6-v2), none (keyword search only).",
    )
    files_hashing_dim: int = Field(256, ge=8, le=8192, description="Dimensions of the hashing embedder.")
    sweep_interval_s: float = Field(60.0, gt=0, description="How often expired uploads are cleaned.")
