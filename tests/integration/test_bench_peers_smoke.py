"""`python -m bench.peers --smoke --no-litellm`: scenario C end to end, small (structure, not speed:
every path answered at one request at a time, on streams, on the rate ladder, and its CPU counted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(180)
def test_peers_smoke_measures_every_path(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.peers", "--smoke", "--no-litellm", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "peers.json").read_text())
    assert report["smoke"] is True and "SIMULATOR" in report["simulator"] and report["litellm"] is None
    paths = {"direct", "gateway", "sdk"}
    assert set(report["sequential"]) == paths and set(report["first_token"]) == paths
    for stage in ("sequential", "first_token"):
        for row in report[stage].values():
            assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert set(report["ladder"]) == paths and all(report["ladder"].values())
    assert set(report["sustained"]) == {"gateway", "sdk"}
    cpu = report["cpu_ms_per_call"]
    assert cpu["gateway"]["gateway"] > 0 and cpu["sdk"]["scheduler"] > 0
    assert (tmp_path / "peers.png").is_file()
