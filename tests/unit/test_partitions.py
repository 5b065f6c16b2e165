"""Partitions of a service's data: which partition holds an agent, who owns which partition, and
the files on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_services.runtime.partitions import assignment, check_layout, partition_of, partition_path


def test_an_agent_always_lands_in_the_same_partition() -> None:
    assert partition_of("agent-1", 8) == partition_of("agent-1", 8)
    assert partition_of("anyone", 1) == 0
    spread = {partition_of(f"agent-{i}", 8) for i in range(200)}
    assert spread == set(range(8))


@pytest.mark.parametrize("count,members", [(4, 2), (8, 3), (16, 5), (3, 4), (1, 2)])
def test_every_partition_has_one_owner_and_shares_are_even(count: int, members: int) -> None:
    names = [f"memory-{i}" for i in range(members)]
    owners = assignment(count, names)
    assert sorted(owners) == list(range(count))
    loads = [list(owners.values()).count(n) for n in names]
    assert max(loads) <= -(-count // members)
    assert assignment(count, list(reversed(names))) == owners  # the same answer everywhere


def test_a_member_leaving_moves_only_what_it_owned_when_shares_allow() -> None:
    names = [f"memory-{i}" for i in range(4)]
    before = assignment(16, names)
    after = assignment(16, names[:3])
    kept = [k for k, m in before.items() if m != "memory-3"]
    moved = [k for k in kept if after[k] != before[k]]
    assert len(moved) <= len(kept) // 2  # most stay put (capped rendezvous, not modulo)


def test_one_partition_keeps_the_plain_file_and_counts_are_not_mixed(tmp_path: Path) -> None:
    base = tmp_path / "memory.duckdb"
    assert partition_path(base, 0, 1) == base
    assert partition_path(base, 3, 8).name == "memory.p03-of-08.duckdb"
    check_layout(base, 8)  # nothing there yet
    partition_path(base, 3, 8).write_bytes(b"")
    check_layout(base, 8)
    with pytest.raises(ValueError, match="8 partition"):
        check_layout(base, 4)
    base.write_bytes(b"")
    with pytest.raises(ValueError, match="into 1 partition"):
        check_layout(base, 8)
