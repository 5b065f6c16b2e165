"""The connection file `aios up` writes into the home and the SDK reads (DESIGN §3)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

CONNECTION_FILE = "connection.json"


class Connection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nats_url: str = Field(description="NATS URL(s) the SDK connects to.")
    namespace: str = Field("", description="Namespace of the deployment (empty = default).")
    token: str = Field(repr=False, description="A local agent token created by `aios up`.")
    agent: str = Field("local", description="Default agent name for that token.")
    s3_endpoint: str | None = Field(None, description="S3 endpoint of the embedded object store.")
    gateway_url: str | None = Field(None, description="OpenAI-compatible HTTP endpoint, when running.")
