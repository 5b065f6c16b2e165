"""Rebuild the metadata from S3 alone (S3 is the source of truth): every `v/` object says which
version of which path it is (its `x-amz-meta-aios-*` headers), and `shares/<owner>.json` holds each
owner's grants. Run at start when the DuckDB file has no versions but the bucket has some (the file
was lost or deleted). Uploads in progress are not versions and are not rebuilt."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from urllib.parse import unquote

from minio.error import S3Error

from .blobs import Blobs
from .handlers import extract_text
from .meta import Share, Version

log = logging.getLogger(__name__)


def _meta(headers: Mapping[str, str]) -> dict[str, str]:
    """The `aios-*` user metadata of an object, whatever case the server gave the header names."""
    out = {}
    for k, v in headers.items():
        key = k.lower().removeprefix("x-amz-meta-")
        if key.startswith("aios-"):
            out[key] = v
    return out


def scan(blobs: Blobs, text_max: int) -> tuple[list[tuple[Version, str | None]], list[Share]]:
    """Every version recorded on S3 (with the text of small text files) and every grant."""
    s3, bucket = blobs.s3, blobs.bucket
    found: dict[tuple[str, str, int], tuple[Version, str | None]] = {}
    refs: list[tuple[Version, str]] = []
    for obj in s3.list_objects(bucket, prefix="v/", recursive=True):
        key = obj.object_name
        if key is None:
            continue
        st = s3.stat_object(bucket, key)
        m = _meta(st.metadata or {})
        if "aios-owner" not in m:
            continue  # not one of ours
        ref = m.get("aios-ref")
        content = key if ref is None else ref
        v = Version(
            owner=m["aios-owner"],
            path=unquote(m["aios-path"]),
            version=int(m["aios-version"]),
            object=content,
            size=int(m.get("aios-size", "0")),
            sha256=m.get("aios-sha256", ""),
            author=m.get("aios-author", m["aios-owner"]),
            created=float(m.get("aios-created", "0")),
            deleted=m.get("aios-deleted") == "1",
            content_type=unquote(m["aios-content-type"]) if "aios-content-type" in m else None,
            restored_from=int(m["aios-restored-from"]) if "aios-restored-from" in m else None,
        )
        if ref:
            refs.append((v, ref))
        text = None
        if ref is None and not v.deleted and v.size <= text_max:
            text = extract_text(blobs.get(key))
        slot = (v.owner, v.path, v.version)
        # Two objects for one version: a write that was stored but not recorded before a crash,
        # then made again. The later one is the version that was answered.
        if slot not in found or found[slot][0].created < v.created:
            found[slot] = (v, text)
    texts: dict[str, str | None] = {v.object: t for v, t in found.values() if t is not None}
    for v, ref in refs:  # rollbacks, moves, uploads: the text of the content they name
        slot = (v.owner, v.path, v.version)
        if slot in found and found[slot][0] is v:
            if ref not in texts and not v.deleted and v.size <= text_max:
                texts[ref] = extract_text(blobs.get(ref))
            found[slot] = (v, texts.get(ref))
    shares: list[Share] = []
    for obj in s3.list_objects(bucket, prefix="shares/", recursive=True):
        if obj.object_name is None:
            continue
        try:
            grants = json.loads(blobs.get(obj.object_name))
        except (S3Error, ValueError) as exc:
            log.warning("unreadable grants %s: %s", obj.object_name, exc)
            continue
        for g in grants:
            shares.append(Share(g["owner"], g["path"], g["prefix"], g["grantee"], g["mode"], g["created"]))
    rows = sorted(found.values(), key=lambda r: (r[0].owner, r[0].path, r[0].version))
    return rows, shares
