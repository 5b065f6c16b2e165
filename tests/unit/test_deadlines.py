"""Deadlines are validated at the boundary: a finite unix time, or none (the scheduler's default)."""

from __future__ import annotations

import json
import math
import time

import pytest
from pydantic import ValidationError

from aios_schemas import Syscall

CHAT = {"kind": "llm.chat", "model": "m", "messages": [{"role": "user", "content": "hi"}]}


def body(**fields: object) -> str:
    base = {"id": "0123456789ab", "agent": "agent-1", "token": "t", "payload": CHAT}
    return json.dumps({**base, **fields})  # json.dumps writes NaN and Infinity as JS does


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0, 0.0, -1, "soon", True])
@pytest.mark.parametrize("field", ["deadline", "created"])
def test_a_deadline_or_creation_time_that_is_no_finite_time_is_refused(field: str, value: object) -> None:
    if field == "created" and value in (0, 0.0):
        return  # created 0 is a (very old) time: the call is then past its default deadline
    with pytest.raises(ValidationError) as info:
        Syscall.model_validate_json(body(**{field: value}))
    assert info.value.errors()[0]["loc"] == (field,)


def test_a_missing_deadline_is_left_to_the_scheduler_and_a_real_one_is_kept() -> None:
    assert Syscall.model_validate_json(body()).deadline is None
    assert Syscall.model_validate_json(body(deadline=None)).deadline is None
    soon = time.time() + 30
    assert Syscall.model_validate_json(body(deadline=soon)).deadline == soon
    assert Syscall.model_validate_json(body(deadline=5)).deadline == 5  # past: deadline_exceeded later
