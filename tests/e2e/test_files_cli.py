"""End to end: files through an `aios up` stack (each service its own process and NATS user), and
the operator's `aios files` commands."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from aios_sdk import AIOS
from tests.e2e.helpers import aios

pytestmark = pytest.mark.e2e


def test_files_through_aios_up_and_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = aios(home, "up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    big = os.urandom(3 * 1024 * 1024)
    try:

        async def agent() -> None:
            async with AIOS.connect(home=home) as client:
                await client.files.write("notes/today.md", "first")
                await client.files.write("notes/today.md", "second")
                await client.files.write("data/big.bin", big)  # multipart upload through presigned URLs
                assert await client.files.read("data/big.bin") == big
                hits = await client.files.search("second")
                assert [h.info.path for h in hits] == ["notes/today.md"]

        asyncio.run(agent())
        ls = aios(home, "files", "ls", "local", "--json")
        assert ls.returncode == 0, ls.stdout + ls.stderr
        entries = {e["path"]: e for e in json.loads(ls.stdout)["entries"]}
        assert set(entries) == {"data/big.bin", "notes/today.md"}
        assert entries["notes/today.md"]["version"] == 2 and entries["data/big.bin"]["size"] == len(big)
        cat = aios(home, "files", "cat", "local", "notes/today.md", "--version", "1")
        assert (cat.returncode, cat.stdout) == (0, "first")
        versions = aios(home, "files", "versions", "local", "notes/today.md")
        assert versions.returncode == 0 and "local" in versions.stdout
        missing = aios(home, "files", "cat", "local", "nope.txt")
        assert missing.returncode == 1 and "not_found" in missing.stderr
        bad = aios(home, "files", "cat", "local", "../etc/passwd")
        assert bad.returncode == 2 and "'..'" in bad.stderr

        # The operator rebuilds the index from S3: the service restarts and everything is there.
        reindex = aios(home, "storage", "reindex")
        assert reindex.returncode == 0 and "rebuilt from S3" in reindex.stdout, (
            reindex.stdout + reindex.stderr
        )
        assert list(home.glob("storage.duckdb.before-reindex-*"))

        async def after() -> None:
            async with AIOS.connect(home=home) as client:
                assert await client.files.read("notes/today.md", version=1) == b"first"
                assert [v.version for v in await client.files.versions("notes/today.md")] == [2, 1]
                assert await client.files.read("data/big.bin") == big
                await client.files.write("notes/today.md", "third")  # numbering goes on
                assert [v.version for v in await client.files.versions("notes/today.md")] == [3, 2, 1]

        asyncio.run(after())
    finally:
        down = aios(home, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert (home / "storage.duckdb").exists()
