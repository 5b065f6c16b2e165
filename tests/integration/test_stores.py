"""The embedded object store (weed mini) and DuckDB, for real: S3 put/get with content types, and
DuckDB writing and reading Parquet on S3 through the offline httpfs extension."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
from botocore.config import Config

from aios_services.runtime.storage import S3Config, connect_duckdb
from tests.conftest import S3


def client(s3: S3):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def test_s3_put_get_list(s3_srv: S3) -> None:
    s3 = client(s3_srv)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello", ContentType="text/plain")
    got = s3.get_object(Bucket=bucket, Key="a/b.txt")
    assert got["Body"].read() == b"hello" and got["ContentType"] == "text/plain"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["a/b.txt"]


def test_duckdb_reads_and_writes_parquet_on_s3(s3_srv: S3, duckdb_file: Path) -> None:
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    client(s3_srv).create_bucket(Bucket=bucket)
    con = connect_duckdb(duckdb_file, S3Config(s3_srv.endpoint, s3_srv.access_key, s3_srv.secret_key))
    con.execute("CREATE TABLE t AS SELECT range AS i, 'x' || range AS s FROM range(1000)")
    con.execute(f"COPY t TO 's3://{bucket}/t.parquet' (FORMAT parquet)")
    n, total = con.execute(f"SELECT count(*), sum(i) FROM read_parquet('s3://{bucket}/t.parquet')").fetchone()  # type: ignore[misc]
    assert (n, total) == (1000, sum(range(1000)))
    con.close()
