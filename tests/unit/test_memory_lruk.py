"""LRU-K (K=2) eviction order of an agent's working set."""

from __future__ import annotations

from aios_services.memory.lruk import LruK, Quota


def test_once_touched_go_before_twice_touched_lru_among_them() -> None:
    ws: LruK[str, str] = LruK(Quota(records=3, bytes=10**6))
    ws.put("a", "A", 1)
    ws.put("b", "B", 1)
    ws.put("c", "C", 1)
    ws.get("a")  # a: two accesses, b and c one each
    assert ws.order() == ["b", "c", "a"]
    assert ws.put("d", "D", 1) == ["b"]  # b: least recent of those with < K accesses
    assert set(ws.order()) == {"a", "c", "d"} and ws.order()[-1] == "a"


def test_backward_k_distance_not_recency_decides() -> None:
    ws: LruK[str, str] = LruK(Quota(records=2, bytes=10**6))
    ws.put("hot", "H", 1)
    ws.get("hot")  # hot: accesses 1, 2
    ws.put("warm", "W", 1)  # 3
    ws.get("warm")  # 4
    ws.get("warm")  # 5: warm's 2nd most recent access (4) is newer than hot's (1)
    ws.get("hot")  # 6: most recent is hot, but its 2nd most recent is 2 < warm's 4
    assert ws.order() == ["hot", "warm"]  # plain LRU would evict warm
    ws.get("hot")  # 7: now hot's 2nd most recent is 6
    assert ws.order() == ["warm", "hot"]


def test_a_scan_does_not_flush_the_hot_set() -> None:
    ws: LruK[str, int] = LruK(Quota(records=4, bytes=10**6))
    for key in ("h1", "h2"):
        ws.put(key, 0, 1)
        ws.get(key)
    evicted = []
    for i in range(20):  # a one-pass scan of cold records
        evicted += ws.put(f"s{i}", i, 1)
    assert "h1" in ws and "h2" in ws
    assert not {"h1", "h2"} & set(evicted)


def test_bytes_quota_and_the_new_record_stays() -> None:
    ws: LruK[str, str] = LruK(Quota(records=100, bytes=10))
    ws.put("a", "A", 4)
    ws.put("b", "B", 4)
    assert ws.put("c", "C", 4) == ["a"]
    assert ws.bytes == 8
    assert ws.put("big", "X", 50) == ["b", "c"]  # over quota alone, but in use: kept
    assert list(ws.order()) == ["big"] and ws.bytes == 50


def test_history_survives_eviction_but_not_delete() -> None:
    ws: LruK[str, str] = LruK(Quota(records=2, bytes=10**6))
    ws.put("a", "A", 1)
    ws.get("a")
    ws.put("b", "B", 1)
    ws.put("c", "C", 1)  # evicts b (one access)
    assert "b" not in ws
    # Back: its earlier access counts, so it has two now and c (one access) goes, not b.
    assert ws.put("b", "B", 1) == ["c"]
    assert ws.order() == ["a", "b"]  # both twice accessed: a's 2nd most recent access is older
    ws.forget("a")
    assert "a" not in ws and len(ws) == 1


def test_replace_keeps_byte_count_right() -> None:
    ws: LruK[str, str] = LruK(Quota(records=10, bytes=100))
    ws.put("a", "A", 30)
    ws.put("a", "A2", 40)
    assert ws.bytes == 40 and len(ws) == 1
    ws.discard("a")
    assert ws.bytes == 0
