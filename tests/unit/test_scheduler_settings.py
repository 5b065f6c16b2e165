"""Scheduler settings fail at start, naming the bad policy or parameter (not on every call)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from aios_services.scheduler.settings import SchedulerSettings


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"policy": "bogus"}, "'bogus'"),
        ({"policy": "rr", "policy_params": {"quantum": -1}}, "quantum"),
        ({"policy": "fifo", "policy_params": {"nope": 1}}, "nope"),
        ({"resource_policies": {"llm.m": {"name": "zzz"}}}, "llm.m"),
        ({"quotas": {"a": {"calls": 1, "per": "week"}}}, "per"),
    ],
)
def test_bad_scheduler_settings_name_what_is_wrong(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError) as exc:
        SchedulerSettings(**fields)  # type: ignore[arg-type]
    assert named in str(exc.value)


def test_good_settings_pass() -> None:
    s = SchedulerSettings(  # type: ignore[call-arg]
        policy="rr",
        policy_params={"quantum": 0.5},
        resource_policies={"llm.big": {"name": "las"}},
        quotas={"a-*": [{"calls": 5, "per": "minute"}, {"tokens": 100}]},
    )
    assert s.policy == "rr"


def test_the_service_started_by_hand_with_a_bad_policy_exits_with_one_line() -> None:
    env = {"AIOS_POLICY": "bogus", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "aios_services.scheduler"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "bogus" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
