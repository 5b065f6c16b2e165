"""The storage service: runs `files.*` syscalls, an agent file system on S3 with versions, sharing
and search (metadata in DuckDB)."""

from .handlers import StorageHandlers
from .settings import StorageSettings

__all__ = ["StorageHandlers", "StorageSettings"]
