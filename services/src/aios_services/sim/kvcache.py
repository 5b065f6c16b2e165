"""Paged KV-cache block pool with prefix caching: hashed full blocks stay reusable until evicted (LRU)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(eq=False)
class Block:
    """One KV block. `block_hash` is set once the block holds a full, hashable run of tokens."""

    block_id: int
    ref_count: int = 0
    block_hash: int | None = None


class BlockPool:
    """vLLM's free-block queue: allocate from the head, freed blocks go to the tail (evicted last).

    Blocks are created lazily so that a huge budget (the hosted profile) costs nothing up front; never
    used blocks come before freed ones, exactly as in vLLM's initial queue order.
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._created = 0
        self._free: OrderedDict[int, Block] = OrderedDict()
        self._cached: dict[int, Block] = {}

    @property
    def num_free(self) -> int:
        return self.num_blocks - self._created + len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def count_free(self, blocks: Sequence[Block]) -> int:
        """How many of `blocks` sit in the free queue (touching them takes them out of it)."""
        return sum(1 for b in blocks if b.ref_count == 0)

    def lookup(self, hashes: Sequence[int]) -> list[Block]:
        """The longest cached prefix of a chain of block hashes."""
        hits: list[Block] = []
        for h in hashes:
            block = self._cached.get(h)
            if block is None:
                break
            hits.append(block)
        return hits

    def touch(self, blocks: Sequence[Block]) -> None:
        for block in blocks:
            if block.ref_count == 0:
                del self._free[block.block_id]
            block.ref_count += 1

    def allocate(self, n: int) -> list[Block]:
        if n > self.num_free:
            raise RuntimeError("KV pool exhausted")
        out: list[Block] = []
        for _ in range(n):
            if self._created < self.num_blocks:
                block = Block(self._created)
                self._created += 1
            else:
                _, block = self._free.popitem(last=False)
                self._evict(block)
            block.ref_count = 1
            out.append(block)
        return out

    def release(self, blocks: Sequence[Block]) -> None:
        # Reverse order, as vLLM: a sequence's tail blocks are the least likely to be shared, so
        # they should be evicted first.
        for block in reversed(blocks):
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block.block_id] = block

    def register(self, block: Block, block_hash: int) -> None:
        """Publish a full block under its chained hash (first writer wins, like vLLM)."""
        if block.block_hash is None and block_hash not in self._cached:
            block.block_hash = block_hash
            self._cached[block_hash] = block

    def _evict(self, block: Block) -> None:
        if block.block_hash is not None:
            if self._cached.get(block.block_hash) is block:
                del self._cached[block.block_hash]
            block.block_hash = None
