"""Recorder settings (environment, prefix `AIOS_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from ..runtime import ServiceSettings


class RecorderSettings(ServiceSettings):
    recorder_db: Path = Field(Path(".aios/traces.duckdb"), description="DuckDB file of events and spans.")
    s3_endpoint: str = Field("", description="S3 endpoint for the Parquet archives ('' : none).")
    s3_access_key: str = Field("", description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    traces_bucket: str = Field(
        "aios-traces", min_length=3, max_length=63, description="Bucket of the archives."
    )
    recorder_flush_s: float = Field(0.5, gt=0, description="How often buffered rows are written (and acked).")
    recorder_export_s: float = Field(300.0, gt=0, description="How often new rows are archived as Parquet.")
    stream_wait_s: float = Field(
        60.0, gt=0, description="How long to wait at start for the events stream (the scheduler makes it)."
    )
    recorder_prices: dict[str, float] = Field(
        default_factory=dict,
        description="Price per 1,000 tokens by resource (e.g. llm.gpt-4o), for `aios stats`.",
    )
