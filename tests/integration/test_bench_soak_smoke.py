"""`python -m bench.soak --minutes 0.3`: the soak end to end, small (structure, not figures: every
kind of call made, every kernel process sampled at start, periodically and at the end, the report
written and the exit code in step with it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import KERNEL, KINDS


@pytest.mark.timeout(150)
def test_soak_smoke_reports_every_process_and_kind(tmp_path: Path) -> None:
    args = ("-m", "bench.soak", "--minutes", "0.3", "--agents", "4", "--sample-s", "6", "--out")
    done = subprocess.run(
        [sys.executable, *args, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=140,
        cwd=Path(__file__).parents[2],
    )
    report = json.loads((tmp_path / "soak.json").read_text())
    assert done.returncode == (0 if report["passed"] else 1), done.stderr[-3000:]
    assert report["passed"] is (report["error_rate"] <= report["max_error_rate"] and not report["died"])
    assert report["agents"] == 4 and report["calls"] > 0
    assert set(report["kinds"]) == set(KINDS)
    for kind in report["kinds"].values():
        assert kind["calls"] > 0
        if kind["p50_ms"] is not None:
            assert 0 < kind["p50_ms"] <= kind["p99_ms"]
    assert sum(k["calls"] for k in report["kinds"].values()) == report["calls"]
    assert sum(report["errors"].values()) == round(report["error_rate"] * report["calls"])
    assert set(report["processes"]) == set(KERNEL)
    for p in report["processes"].values():
        assert p["rss_mb_start"] > 0 and p["fds_start"] > 0 and p["alive"]
        assert p["rss_mb_max"] >= max(p["rss_mb_start"], p["rss_mb_end"])
        assert p["fds_max"] >= max(p["fds_start"], p["fds_end"])
    assert len(report["samples"]) >= 3  # start, at least one periodic, end
    for sample in report["samples"]:
        assert set(sample["processes"]) == set(KERNEL)
