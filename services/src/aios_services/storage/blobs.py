"""The storage service's objects on S3 (the `minio` SDK; weed mini here, MinIO or any S3 elsewhere).

Layout of bucket `aios-files` (no key ever holds a path an agent chose: no path trick reaches S3):
- `v/<owner>/<id>`: one object per version. A write's object holds the bytes; a version that reuses
  content (rollback, move) or records a deletion is an empty object pointing at the content's key.
  Each carries its metadata (`x-amz-meta-aios-*`: path, version, sha256, author, ...), so the index
  can be rebuilt from S3 alone; no dependence on bucket versioning, which not every S3 server has.
- `c/<owner>/<upload id>`: the content of a large file, written by a multipart upload through
  presigned part URLs; the `v/` object of its version points at it.
- `shares/<owner>.json`: the owner's grants, rewritten on every change.

The SDK is synchronous (urllib3): calls run on a thread pool of their own, sized like the service's
slots, with a connection pool as large.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import S3Error

from aios_schemas import AiosError

T = TypeVar("T")
CHUNK = 1024 * 1024  # what a streamed read holds at once


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str
    head: bytes  # the first bytes (up to what was asked), for text extraction


def _client(endpoint: str, access: str, secret: str, region: str, pool: int) -> Minio:
    url = urlparse(endpoint)
    http = urllib3.PoolManager(
        maxsize=pool,
        timeout=urllib3.Timeout(connect=5.0, read=60.0),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(
        url.netloc,
        access_key=access,
        secret_key=secret,
        secure=url.scheme == "https",
        region=region,  # given, so the SDK never asks the server for it
        http_client=http,
    )


class Blobs:
    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        region: str,
        bucket: str,
        public_endpoint: str | None = None,
        threads: int = 32,
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        self.s3 = _client(endpoint, access_key, secret_key, region, threads)
        # Presigned URLs are signed for the host agents use (signatures cover the host).
        self.signer = (
            _client(public_endpoint, access_key, secret_key, region, 1) if public_endpoint else self.s3
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="storage-s3")

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the pool; the object store's failures come out typed (backend_unavailable:
        unreachable, retry later; backend_error: it answered with an error)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        except S3Error as exc:
            raise AiosError(
                "backend_error", f"object store error: {exc.code}", details={"code": exc.code}
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise AiosError(
                "backend_unavailable",
                f"object store unreachable: {type(exc).__name__}",
                details={"endpoint": self.endpoint},
            ) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- synchronous parts (on the pool) ---------------------------------------------------
    def ensure_bucket(self) -> None:
        try:
            self.s3.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put(self, key: str, data: bytes, meta: Mapping[str, str], content_type: str | None = None) -> None:
        self.s3.put_object(
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type or "application/octet-stream",
            metadata=dict(meta),
        )

    def get(self, key: str) -> bytes:
        resp = self.s3.get_object(self.bucket, key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def size(self, key: str) -> int | None:
        try:
            return int(self.s3.stat_object(self.bucket, key).size or 0)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return None
            raise

    def digest(self, key: str, keep: int) -> Digest:
        """Size and SHA-256 of an object, read as a stream (CHUNK at a time), and its first `keep`
        bytes."""
        h = hashlib.sha256()
        size = 0
        head = bytearray()
        resp = self.s3.get_object(self.bucket, key)
        try:
            for chunk in resp.stream(CHUNK):
                h.update(chunk)
                size += len(chunk)
                if len(head) < keep:
                    head += chunk[: keep - len(head)]
        finally:
            resp.close()
            resp.release_conn()
        return Digest(size, h.hexdigest(), bytes(head))

    def remove(self, key: str) -> None:
        self.s3.remove_object(self.bucket, key)

    # Multipart uploads: the SDK's public API has no presigned part URLs, so these use its
    # request-level methods (`_create_multipart_upload`...; minio is pinned below 8 for them).
    def start_multipart(self, key: str, content_type: str | None) -> str:
        return self.s3._create_multipart_upload(
            self.bucket, key, {"Content-Type": content_type or "application/octet-stream"}
        )

    def part_url(self, key: str, upload_id: str, number: int, ttl_s: float) -> str:
        return self.signer.get_presigned_url(
            "PUT",
            self.bucket,
            key,
            expires=timedelta(seconds=ttl_s),
            extra_query_params={"partNumber": str(number), "uploadId": upload_id},
        )

    def uploaded_parts(self, key: str, upload_id: str) -> list[tuple[int, str, int]] | None:
        """(number, etag, size) of each part received, or None if the upload is no more (completed
        or aborted)."""
        out: list[tuple[int, str, int]] = []
        marker = 0
        while True:
            try:
                res = self.s3._list_parts(
                    self.bucket, key, upload_id, max_parts=1000, part_number_marker=str(marker)
                )
            except S3Error as exc:
                if exc.code == "NoSuchUpload":
                    return None
                raise
            out += [(p.part_number, p.etag, int(p.size or 0)) for p in res.parts]
            if not res.is_truncated:
                return out
            marker = int(res.next_part_number_marker or 0)

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str, int]]) -> None:
        self.s3._complete_multipart_upload(
            self.bucket, key, upload_id, [Part(number, etag) for number, etag, _ in parts]
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self.s3._abort_multipart_upload(self.bucket, key, upload_id)
        except S3Error as exc:
            if exc.code != "NoSuchUpload":
                raise

    def get_url(self, key: str, ttl_s: float) -> str:
        return self.signer.presigned_get_object(self.bucket, key, expires=timedelta(seconds=ttl_s))
