"""The fuzz run's size: each fuzz test asserts it tried at least its share; the shares add up to the
1,000 payloads per run issue 15 asks for."""

from __future__ import annotations

import pytest

from tests.fuzz import test_controls, test_syscalls, test_wire

pytestmark = pytest.mark.fuzz


def test_a_run_tries_at_least_1000_payloads() -> None:
    shares = (
        test_syscalls.EXAMPLES,
        test_controls.EXAMPLES,
        test_wire.HEADER_EXAMPLES,
        3 * test_wire.DUPLICATE_EXAMPLES,  # three publications each
    )
    assert sum(shares) >= 1000, shares
