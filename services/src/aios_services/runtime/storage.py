"""Clients for the object store (S3: weed mini embedded, MinIO in production) and DuckDB files.

DuckDB's httpfs extension comes from the PyPI package `duckdb-extension-httpfs` and is loaded from
its file, so nothing is downloaded at run time (DESIGN §8).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import duckdb

# duckdb's Python client (1.5) tries `import pandas` for every parameter it binds; without pandas
# installed (the kernel does not need it) each attempt walks sys.path, and that was two thirds of a
# 10-parameter INSERT (measured here: 1,350 us, 445 us without it). A `None` in sys.modules makes
# the import fail at once, as it would anyway (Python's documented way to mark a module absent).
if "pandas" not in sys.modules and importlib.util.find_spec("pandas") is None:
    sys.modules["pandas"] = None  # type: ignore[assignment]


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # e.g. http://127.0.0.1:8333
    access_key: str
    secret_key: str
    region: str = "us-east-1"


def httpfs_extension() -> Path:
    import duckdb_extension_httpfs

    root = Path(duckdb_extension_httpfs.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    return root / "httpfs.duckdb_extension"


def connect_duckdb(path: Path | str, s3: S3Config | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (one writer process per file); with `s3`, httpfs is loaded offline and
    pointed at the object store, so `read_parquet('s3://bucket/key')` and `COPY ... TO 's3://...'`
    work."""
    con = duckdb.connect(str(path))
    if s3 is not None:
        con.execute(f"LOAD '{httpfs_extension()}'")
        url = urlparse(s3.endpoint)
        con.execute(
            "CREATE OR REPLACE SECRET aios_s3 (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, "
            "URL_STYLE 'path', USE_SSL ?)",
            [s3.access_key, s3.secret_key, s3.region, url.netloc, url.scheme == "https"],
        )
    return con
