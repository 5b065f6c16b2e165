"""Timing model of a vLLM-V1-like engine: continuous batching, chunked prefill, paged KV, preemption."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Literal, Protocol

from aios_services.sim.kvcache import Block, BlockPool
from aios_services.sim.profiles import EngineProfile

# Below this lag the engine runs the next step without sleeping: an asyncio sleep costs a loop
# iteration and overshoots by ~0.1-1 ms, which would dominate sub-millisecond (time-scaled) steps.
_MIN_SLEEP_S = 0.001
# Consecutive steps run without any sleep before yielding once, so HTTP handlers still get to run.
_STEPS_PER_YIELD = 8

SeqStatus = Literal["waiting", "running", "finished", "cancelled"]


class Clock(Protocol):
    """Where the engine reads time and waits; tests swap in a virtual clock."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """Monotonic wall clock."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class VirtualClock:
    """A clock that jumps instead of waiting: a whole run costs only CPU time, timings are exact."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


@dataclass(eq=False)
class SeqState:
    """One request inside the engine. Times are engine (virtual) times in clock seconds."""

    rid: int
    prompt_len: int
    max_new: int
    block_hashes: Seq[int]
    priority: int
    arrival: float
    status: SeqStatus = "waiting"
    num_output: int = 0
    num_computed: int = 0
    blocks: list[Block] = field(default_factory=list)
    registered_blocks: int = 0
    preempted_count: int = 0
    cached_tokens: int = 0
    first_token_time: float | None = None
    finish_time: float | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def num_tokens(self) -> int:
        """Tokens whose KV the sequence needs: prompt plus everything sampled so far."""
        return self.prompt_len + self.num_output

    @property
    def done(self) -> bool:
        return self.status in ("finished", "cancelled")


class SeqHandle:
    """The caller's view of a submitted request: wait for tokens, or cancel (frees slot and KV)."""

    def __init__(self, engine: Engine, seq: SeqState) -> None:
        self._engine = engine
        self.state = seq

    @property
    def emitted(self) -> int:
        return self.state.num_output

    @property
    def done(self) -> bool:
        return self.state.done

    async def wait_progress(self, seen: int) -> int:
        """Wait until more than `seen` tokens exist or the request ended; return the count."""
        while self.state.num_output <= seen and not self.state.done:
            self.state.event.clear()
            await self.state.event.wait()
        return self.state.num_output

    async def wait_done(self) -> None:
        while not self.state.done:
            self.state.event.clear()
            await self.state.event.wait()

    def cancel(self) -> None:
        self._engine.cancel(self.state)


@dataclass
class EngineStats:
    """Counters exposed by /sim/stats."""

    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    max_running_seen: int = 0
    preemptions: int = 0
    recomputed_tokens: int = 0
    prefix_cache_hit_tokens: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    steps: int = 0
    model_time_ms: float = 0.0


class Engine:
    """Continuous-batching engine driven by one asyncio task of steps (see README for the model)."""

    def __init__(self, profile: EngineProfile, clock: Clock | None = None) -> None:
        self.profile = profile
        self.clock: Clock = clock or RealClock()
        self.pool = BlockPool(profile.kv_tokens // profile.block_size)
        self.running: list[SeqState] = []
        self._waiting: list[tuple[int, int, SeqState]] = []  # heap of (priority key, arrival no., seq)
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.vtime = 0.0  # engine time at which the current step ends
        self.stats = EngineStats()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="aios-sim-engine")

    async def stop(self) -> None:
        """End the step loop and every request in flight; later submits fail."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for seq in [*self.running, *(entry[2] for entry in self._waiting)]:
            self.cancel(seq)

    def reset_stats(self) -> None:
        self.stats = EngineStats(max_running_seen=len(self.running))

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def max_request_tokens(self) -> int:
        """Longest prompt + output the engine can ever hold (longer requests would preempt forever)."""
        return min(self.profile.max_model_len, self.pool.num_blocks * self.profile.block_size)

    async def model_sleep(self, model_ms: float) -> None:
        """Wait a modelled duration outside the engine (e.g. a hosted API's fixed TTFT)."""
        await self.clock.sleep(model_ms * self.profile.time_scale / 1000.0)

    # -- requests -------------------------------------------------------------------------------

    def submit(
        self, *, prompt_len: int, max_new: int, block_hashes: Seq[int] = (), priority: int = 0
    ) -> SeqHandle:
        """Queue a request that generates exactly `max_new` (>= 1) tokens after a `prompt_len` prompt."""
        if self._closed:
            raise RuntimeError("engine stopped")
        if max_new < 1 or prompt_len < 1:
            raise ValueError("prompt_len and max_new must be >= 1")
        if prompt_len + max_new > self.max_request_tokens():
            raise ValueError("request longer than the engine can hold")
        seq = SeqState(
            rid=next(self._ids),
            prompt_len=prompt_len,
            max_new=max_new,
            block_hashes=block_hashes,
            priority=priority,
            arrival=self.clock.now(),
        )
        self.stats.requests += 1
        self.stats.prompt_tokens += prompt_len
        self._push_waiting(seq)
        self._wake.set()
        return SeqHandle(self, seq)

    def cancel(self, seq: SeqState) -> None:
        """Abort a request now: its slot and KV blocks are free for the very next step."""
        if seq.done:
            return
        if seq.status == "running":
            self.running.remove(seq)
            self._release(seq)
        else:
            self._waiting = [entry for entry in self._waiting if entry[2] is not seq]
            heapq.heapify(self._waiting)
        seq.status = "cancelled"
        seq.finish_time = self.vtime
        self.stats.cancelled += 1
        seq.event.set()
        self._wake.set()

    def _push_waiting(self, seq: SeqState) -> None:
        # FCFS orders by arrival only, which also puts a preempted request back at the head: every
        # waiting request arrived after every request that was ever admitted before it.
        key = seq.priority if self.profile.scheduling_policy == "priority" else 0
        heapq.heappush(self._waiting, (key, seq.rid, seq))

    # -- the step loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        since_yield = 0
        while True:
            if not self.running and not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                # Idle time is not banked: the next step starts now.
                self.vtime = max(self.vtime, self.clock.now())
            batch = self._schedule()
            if not batch:
                # Nothing fits (cannot happen with validated requests); wait for a change, never spin.
                self._wake.clear()
                await self._wake.wait()
                continue
            step_ms = self.step_ms(batch)
            self.stats.steps += 1
            self.stats.model_time_ms += step_ms
            self.vtime += step_ms * self.profile.time_scale / 1000.0
            lag = self.vtime - self.clock.now()
            if lag > _MIN_SLEEP_S:
                await self.clock.sleep(lag)
                since_yield = 0
            else:
                since_yield += 1
                if since_yield >= _STEPS_PER_YIELD:
                    await asyncio.sleep(0)
                    since_yield = 0
            self._apply(batch)

    def step_ms(self, batch: dict[SeqState, int]) -> float:
        """t = a + b·B + k·Σctx + Σ over prefill chunks (c·P + 2q·P·(s + P/2)) (calibration.md §4)."""
        p = self.profile
        decodes = 0
        ctx = 0
        prefill = 0.0
        for seq, n in batch.items():
            if n == 1 and seq.num_output > 0 and seq.num_tokens - seq.num_computed == 1:
                decodes += 1
                ctx += seq.num_computed
            else:
                s = seq.num_computed
                prefill += p.prefill_ms_per_token * n + 2 * p.prefill_quad_ms * n * (s + n / 2)
        return p.decode_ms + p.per_seq_ms * decodes + p.per_ctx_token_ms * ctx + prefill

    # -- scheduling -----------------------------------------------------------------------------

    def _schedule(self) -> dict[SeqState, int]:
        """One vLLM V1 scheduler pass: running requests first (preempting on KV shortage), then admit."""
        budget = self.profile.max_num_batched_tokens
        batch: dict[SeqState, int] = {}
        preempted = False
        idx = 0
        while idx < len(self.running) and budget > 0:
            seq = self.running[idx]
            num_new = min(seq.num_tokens - seq.num_computed, budget)
            scheduled = True
            while not self._grow(seq, num_new):
                victim = self._pick_victim()
                victim_idx = self.running.index(victim)
                self._preempt(victim)
                preempted = True
                budget += batch.pop(victim, 0)
                if victim is seq:
                    scheduled = False
                    break
                if victim_idx < idx:
                    idx -= 1
            if not scheduled:
                break
            batch[seq] = num_new
            budget -= num_new
            idx += 1
        # Like vLLM: no admissions in a step that had to preempt (memory is short).
        while not preempted and self._waiting and budget > 0:
            if len(self.running) >= self.profile.max_num_seqs:
                break
            seq = self._waiting[0][2]
            num_new = self._admit(seq, budget)
            if num_new == 0:
                break  # head-of-line blocking, as in vLLM
            heapq.heappop(self._waiting)
            batch[seq] = num_new
            budget -= num_new
        self.stats.max_running_seen = max(self.stats.max_running_seen, len(self.running))
        return batch

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.profile.block_size)

    def _grow(self, seq: SeqState, num_new: int) -> bool:
        need = self._blocks_for(seq.num_computed + num_new) - len(seq.blocks)
        if need <= 0:
            return True
        if need > self.pool.num_free:
            return False
        seq.blocks.extend(self.pool.allocate(need))
        return True

    def _admit(self, seq: SeqState, budget: int) -> int:
        """Try to start a waiting request; return the tokens scheduled this step (0 = no room)."""
        bs = self.profile.block_size
        hit_blocks: list[Block] = []
        if self.profile.enable_prefix_caching:
            # The last token is always recomputed to get logits, so a hit is capped at N - 1.
            limit = (seq.num_tokens - 1) // bs
            hit_blocks = self.pool.lookup(seq.block_hashes[:limit])
        hit = len(hit_blocks) * bs
        num_new = min(seq.num_tokens - hit, budget)
        need = self._blocks_for(hit + num_new) - len(hit_blocks)
        if need + self.pool.count_free(hit_blocks) > self.pool.num_free:
            return 0
        self.pool.touch(hit_blocks)
        seq.blocks = hit_blocks + self.pool.allocate(need)
        seq.registered_blocks = len(hit_blocks)
        seq.num_computed = hit
        seq.status = "running"
        self.running.append(seq)
        if seq.preempted_count == 0:
            seq.cached_tokens = hit
        else:
            self.stats.recomputed_tokens += seq.num_tokens - hit
        self.stats.prefix_cache_hit_tokens += hit
        return num_new

    def _pick_victim(self) -> SeqState:
        if self.profile.scheduling_policy == "priority":
            return max(self.running, key=lambda s: (s.priority, s.arrival, s.rid))
        return self.running[-1]  # the most recently admitted

    def _preempt(self, seq: SeqState) -> None:
        """vLLM V1 RECOMPUTE: drop the KV (blocks stay cached by hash) and requeue at the head."""
        self.running.remove(seq)
        self._release(seq)
        seq.num_computed = 0
        seq.status = "waiting"
        seq.preempted_count += 1
        self.stats.preemptions += 1
        self._push_waiting(seq)

    def _release(self, seq: SeqState) -> None:
        self.pool.release(seq.blocks)
        seq.blocks = []
        seq.registered_blocks = 0

    # -- step results -------------------------------------------------------------------------

    def _apply(self, batch: dict[SeqState, int]) -> None:
        bs = self.profile.block_size
        caching = self.profile.enable_prefix_caching
        for seq, n in batch.items():
            if seq.status != "running":
                continue  # cancelled while the step ran
            seq.num_computed += n
            if caching:
                full = min(seq.num_computed // bs, len(seq.block_hashes))
                for j in range(seq.registered_blocks, full):
                    self.pool.register(seq.blocks[j], seq.block_hashes[j])
                seq.registered_blocks = max(seq.registered_blocks, full)
            if seq.num_computed < seq.num_tokens:
                continue  # a prefill chunk that is not the last one samples nothing
            seq.num_output += 1
            self.stats.generated_tokens += 1
            if seq.first_token_time is None:
                seq.first_token_time = self.vtime
            if seq.num_output >= seq.max_new:
                self.running.remove(seq)
                self._release(seq)
                seq.status = "finished"
                seq.finish_time = self.vtime
                self.stats.completed += 1
            seq.event.set()
