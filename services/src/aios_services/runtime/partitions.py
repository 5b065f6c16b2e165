"""Replicas of a service that owns data in DuckDB: the data is split into partitions by agent, and
each partition is owned by exactly one live replica at a time.

DuckDB allows one writer per file, so N replicas cannot share one file. Each partition is its own
file (`memory.p03-of-08.duckdb`); a replica serves the partitions it owns, and the replica that
takes a call for another's partition forwards it there (`Namespace.exec_partition`).

Who owns what (KV bucket `AIOS_OWNERS`, entries expire after `ttl_s` unless refreshed):
- every replica heartbeats `member.<service>.<instance>`; the live members are the keys present;
- the owner of partition k is the member that rendezvous hashing picks for k, so a replica that
  joins or dies moves only the partitions it must (about 1/N of them), and every replica computes
  the same answer from the same member list, with no election;
- before serving k, a replica takes its lease: `lease.<service>.<k>`, created only if absent and
  refreshed with the revision it holds (compare-and-set). A replica that should no longer own k
  (a new member takes it) stops serving it, closes its file, and deletes the lease; the new owner
  takes the lease after that. A replica that finds its lease taken (it was paused longer than the
  TTL) stops serving that partition at once.
- The file's own lock (DuckDB's) is the second fence: a new owner whose predecessor still holds the
  file (a paused process) cannot open it, and keeps trying while it holds the lease.

Failover after a crash takes up to the TTL plus one tick (the dead replica's member key and leases
expire). Across machines, the partition files must be on storage every replica can reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import nats
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_=-]")


def partition_of(key: str, count: int) -> int:
    """The partition that holds `key`'s data (an agent's name): stable across processes and
    versions (not Python's salted `hash`)."""
    if count <= 1:
        return 0
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def assignment(count: int, members: Iterable[str]) -> dict[int, str]:
    """Who owns each partition: rendezvous (highest random weight) hashing, capped so that no member
    owns more than its share (ceil(count / members)). Every replica computes the same answer from
    the same member list, so no election is needed; a join or a death moves few partitions beyond
    those it must (plain rendezvous alone is lopsided with few partitions)."""
    live = sorted(set(members))
    if not live:
        return {}
    cap = -(-count // len(live))
    load = dict.fromkeys(live, 0)
    owners: dict[int, str] = {}
    for k in range(count):
        ranked = sorted(live, key=lambda m: hashlib.blake2b(f"{k}\0{m}".encode(), digest_size=8).digest())
        for m in reversed(ranked):
            if load[m] < cap:
                owners[k] = m
                load[m] += 1
                break
    return owners


def partition_path(base: Path, partition: int, count: int) -> Path:
    """The file of one partition. With one partition it is `base` itself, so a service that was
    never partitioned keeps its file."""
    if count <= 1:
        return base
    return base.with_name(f"{base.stem}.p{partition:02d}-of-{count:02d}{base.suffix}")


def check_layout(base: Path, count: int) -> None:
    """Refuse to start with a partition count other than the one the data was written with: the
    files of another count hold agents this count would look for elsewhere."""
    pattern = re.compile(re.escape(base.stem) + r"\.p\d+-of-(\d+)" + re.escape(base.suffix) + "$")
    found: set[int] = set()
    if base.parent.is_dir():
        for f in base.parent.iterdir():
            m = pattern.match(f.name)
            if m:
                found.add(int(m.group(1)))
    if base.exists():
        found.add(1)
    others = found - {count}
    if others:
        raise ValueError(
            f"{base.parent} holds data split into {', '.join(map(str, sorted(others)))} partition(s) but"
            f" this service is set to {count}: start it with the same count (AIOS_PARTITIONS)"
        )


def _safe(name: str) -> str:
    return _KEY_UNSAFE.sub("_", name)


class Partitions:
    """This replica's part in owning a service's partitions.

    `take(k)` opens partition k and starts serving it (it may raise: the file is still locked by
    the previous owner; it is tried again next tick); `give(k)` stops serving it and closes it
    (after the calls in progress on it finish)."""

    def __init__(
        self,
        kv: KeyValue,
        service: str,
        instance: str,
        count: int,
        take: Callable[[int], Awaitable[None]],
        give: Callable[[int], Awaitable[None]],
        *,
        ttl_s: float,
        sticky: bool = False,
    ) -> None:
        self.kv = kv
        self.service = service
        self.instance = instance
        self.count = count
        self._take = take
        self._give = give
        self.ttl_s = ttl_s
        # Sticky: every replica wants every partition and a holder keeps its lease (no rebalancing
        # when one joins): an active replica with standbys (exclusive.py).
        self.sticky = sticky
        self.member_key = f"member.{_safe(service)}.{_safe(instance)}"
        self.leases: dict[int, int] = {}  # partition -> revision of the lease this replica holds
        self.serving: set[int] = set()  # partitions open and served here
        self.members: list[str] = []
        self.confirmed = time.monotonic()
        self.stopping = False

    def _lease_key(self, k: int) -> str:
        return f"lease.{_safe(self.service)}.{k}"

    async def _live_members(self) -> list[str]:
        prefix = f"member.{_safe(self.service)}."
        try:  # (nats-py's `filters` match substrings, and warn: filtered here instead)
            keys = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            keys = []
        found = sorted(k.removeprefix(prefix) for k in keys if k.startswith(prefix))
        me = _safe(self.instance)
        return found if me in found else sorted([*found, me])

    def wanted(self) -> set[int]:
        if self.sticky:
            return set(range(self.count))
        me = _safe(self.instance)
        return {k for k, m in assignment(self.count, self.members).items() if m == me}

    async def tick(self) -> None:
        """One round: say this replica is alive, see who else is, refresh the leases held, let go of
        what is no longer ours, and take what is."""
        if self.stopping:
            return
        before = set(self.serving)
        await self.kv.put(self.member_key, self.instance.encode())
        self.members = await self._live_members()
        wanted = self.wanted()
        for k, rev in list(self.leases.items()):
            try:
                self.leases[k] = await self.kv.update(self._lease_key(k), self.instance.encode(), last=rev)
            except KeyWrongLastSequenceError:
                # Our own earlier refresh may have landed with its answer lost (a node died): then the
                # lease is still ours at a newer revision. Otherwise it expired and another took it
                # (we were paused): stop serving it at once.
                again = await self._claim(k)
                if again is not None:
                    self.leases[k] = again
                    continue
                log.warning("%s lost partition %d of %s: stopping it", self.instance, k, self.service)
                self.leases.pop(k, None)
                await self._stop_serving(k)
        for k in sorted(set(self.leases) - wanted):
            await self._stop_serving(k)
            with contextlib.suppress(nats.errors.Error):
                await self.kv.delete(self._lease_key(k), last=self.leases[k])
            self.leases.pop(k, None)
        for k in sorted(wanted):
            if k not in self.leases:
                got = await self._claim(k)
                if got is None:
                    continue  # its owner has not let go yet (or died: the lease expires)
                self.leases[k] = got
            if k not in self.serving:
                try:
                    await self._take(k)
                except Exception as exc:  # e.g. the file is still locked by the previous owner
                    log.info("partition %d of %s not open yet: %s", k, self.service, exc)
                    continue
                self.serving.add(k)
        self.confirmed = time.monotonic()
        if self.serving != before:
            log.info("%s serves partitions %s of %s", self.instance, sorted(self.serving), self.service)

    async def _claim(self, k: int) -> int | None:
        key = self._lease_key(k)
        try:
            return await self.kv.create(key, self.instance.encode())
        except KeyWrongLastSequenceError:
            pass
        # Ours already: this replica restarted under the same instance name (the supervisor names
        # its replicas) before its old lease expired; no one else can hold it meanwhile.
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            entry = await self.kv.get(key)
            if entry.value == self.instance.encode() and entry.revision is not None:
                with contextlib.suppress(KeyWrongLastSequenceError):
                    return await self.kv.update(key, self.instance.encode(), last=entry.revision)
        return None

    async def _stop_serving(self, k: int) -> None:
        if k in self.serving:
            self.serving.discard(k)
            await self._give(k)

    async def run_forever(self) -> None:
        every = self.ttl_s / 4
        while not self.stopping:
            try:
                await self.tick()
            except nats.errors.Error as exc:  # the bus is away: keep serving what we hold
                log.warning("partition round of %s failed: %r", self.service, exc)
            await asyncio.sleep(every)

    async def release_all(self) -> None:
        """A graceful stop: close every partition and let the others take them at once."""
        self.stopping = True
        for k in sorted(self.serving):
            await self._stop_serving(k)
        with contextlib.suppress(nats.errors.Error):
            for k, rev in list(self.leases.items()):
                await self.kv.delete(self._lease_key(k), last=rev)
            await self.kv.delete(self.member_key)
        self.leases.clear()

    def problem(self) -> str | None:
        late = time.monotonic() - self.confirmed
        return f"partition leases not refreshed for {late:.0f}s" if late > self.ttl_s / 2 else None
