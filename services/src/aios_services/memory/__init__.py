"""The memory service: runs `memory.*` syscalls over a per-agent working set (LRU-K) and a long-term
store (DuckDB, S3), with pluggable embedders for semantic search."""

from .embedders import (
    BatchingEmbedder,
    Embedder,
    EmbedderError,
    HashingEmbedder,
    HttpEmbedder,
    MiniLMEmbedder,
)
from .handlers import Deps, MemoryHandlers
from .lruk import LruK, Quota
from .settings import AgentQuota, MemorySettings

__all__ = [
    "AgentQuota",
    "BatchingEmbedder",
    "Deps",
    "Embedder",
    "EmbedderError",
    "HashingEmbedder",
    "HttpEmbedder",
    "LruK",
    "MemoryHandlers",
    "MemorySettings",
    "MiniLMEmbedder",
    "Quota",
]
