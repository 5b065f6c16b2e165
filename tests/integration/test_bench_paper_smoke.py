"""`python -m bench.paper --smoke`: the paper's experiment end to end, small (structure, not speed:
every regime and mode ran, every agent completed, the report has what RESULTS.md quotes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.paper import MODES, REGIMES, adaptive_supported


@pytest.mark.timeout(180)
def test_paper_smoke_runs_every_regime_and_mode(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.paper", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "paper.json").read_text())
    assert report["smoke"] is True and report["seed"] == 1 and "simulator" in report
    assert report["machine"]["cpus"] and report["command"].startswith("python -m bench.paper")
    modes = [m for m in MODES if m != "las-adaptive" or adaptive_supported()]
    assert list(report["regimes"]) == list(REGIMES)
    for key, regime in report["regimes"].items():
        assert list(regime["modes"]) == modes, key
        for name, m in regime["modes"].items():
            assert m["completed"] + m["failed"] == m["agents"] == report["agents"]
            assert len(m["completion_s"]) == m["completed"] and 0 < m["jain_slowdown"] <= 1
            if key == "c" and name == "direct":  # may lose agents to 429s: what regime (c) shows
                assert m["completed"] > 0 and m["retries"] >= m["client_429s"] - m["failed"]
            else:  # every kernel mode, and direct access below the engine's limits: all complete
                assert m["failed"] == 0, (key, name, m["errors"])
            assert m["calls"] >= m["agents"]
        assert regime["ratios"]["direct"]["throughput_vs_direct"] == 1.0
        assert "las_mean_vs_fifo" in regime["targets"]
    for line in ("(a) engine not overloaded", "(b) KV cache overloaded", "(c) hosted API", "x direct"):
        assert line in done.stdout
