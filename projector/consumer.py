"""The consumer-group loop: read, apply (atomically with the ack), reclaim, dead-letter."""

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
import redis

from common import events as ev
from common.keys import Keys
from common.redisconn import text
from common.resp import Arg, Batch, call
from projector.metrics import ProjectorMetrics
from projector.scripts import ApplySettings, Scripts, is_noscript

log = logging.getLogger(__name__)


class ConsumerSettings(msgspec.Struct, frozen=True):
    group: str = "projector"
    consumer: str = ""
    batch_size: int = 500
    # Well below the client's socket timeout: a blocking read must never look like
    # a dead connection (redis-py 8 defaults to 5 s reads and 10 retries).
    block_ms: int = 1000
    reclaim_idle_ms: int = 30_000
    reclaim_every_s: float = 5.0
    max_deliveries: int = 5
    start_id: str = "0"
    apply: ApplySettings = ApplySettings()


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Projector:
    """One consumer in the group; run() until stop is set, finishing the batch in hand."""

    def __init__(
        self, r: "redis.Redis", keys: Keys, settings: ConsumerSettings, metrics: ProjectorMetrics
    ) -> None:
        self.r, self.keys, self.settings, self.metrics = r, keys, settings, metrics
        self.consumer = settings.consumer or default_consumer_name()
        self.scripts = Scripts(keys, settings.apply)
        self.connected = False
        self._read_own_pending = True
        self._next_reclaim = 0.0

    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; from start_id so a new
        deployment builds the full state."""
        try:
            self.r.xgroup_create(
                self.keys.stream, self.settings.group, id=self.settings.start_id, mkstream=True
            )
            log.info("created consumer group %s", self.settings.group)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if not self.connected:
                    self.ensure_group()
                    self.scripts.load(self.r)
                    self.connected = True
                    # After a connection error our own pending entries may be unapplied.
                    self._read_own_pending = True
                self.step()
            except redis.ConnectionError as exc:
                self._lost(exc, stop)
            except redis.TimeoutError as exc:
                self._lost(exc, stop)
            except redis.ResponseError as exc:
                # NOGROUP on the next read, UNBLOCKED for a read blocked at the time.
                if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                    raise
                # The stream or group was deleted under us (FLUSHALL, a restore): recreate.
                log.warning("consumer group gone, recreating it: %s", exc)
                self.connected = False

    def _lost(self, exc: Exception, stop: threading.Event) -> None:
        if self.connected:
            log.warning("redis connection lost: %s", exc)
        self.connected = False
        self.metrics.reconnects.inc()
        stop.wait(1.0)

    def step(self) -> int:
        """Read and apply one batch; returns how many entries it handled."""
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self.settings.reclaim_every_s
            self.reclaim()
        entries: list[ev.Entry] = []
        if self._read_own_pending:
            entries = self._read("0", block_ms=None)
            self._read_own_pending = bool(entries)
        if not entries:
            entries = self._read(">", block_ms=self.settings.block_ms)
        return self.apply(entries)

    def _read(self, read_id: str, block_ms: int | None) -> list[ev.Entry]:
        s = self.settings
        args: list[Arg] = [b"XREADGROUP", b"GROUP", s.group, self.consumer, b"COUNT", s.batch_size]
        if block_ms is not None:
            args += (b"BLOCK", block_ms)
        return ev.entries_from_read_reply(
            call(self.r, *args, b"STREAMS", self.keys.stream, read_id)
        )

    def apply(self, entries: Sequence[ev.Entry]) -> int:
        """Apply entries and ack them, each atomically with its state change."""
        if not entries:
            return 0
        started = time.perf_counter()
        queued: list[tuple[str, ev.StreamEvent | None]] = []
        dead: list[tuple[str, dict[Any, Any], str]] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if not fields:
                # Trimmed while pending (Redis 7 keeps the id, drops the fields).
                self.metrics.trimmed_pending.inc()
                if self.settings.group:
                    queued.append((entry_id, None))
                continue
            try:
                event = ev.from_fields(fields)
            except ev.MalformedEntryError as exc:
                dead.append((entry_id, fields, str(exc)))
                continue
            queued.append((entry_id, event))
        results = self._run(queued)
        now_ns = time.time_ns()
        outcomes: Counter[str] = Counter()
        # A replay (no group) applies old entries: their age is not a latency.
        observe_latency = bool(self.settings.group)
        for (entry_id, applied), result in zip(queued, results, strict=True):
            if applied is None:
                continue
            if isinstance(result, Exception):
                dead.append((entry_id, dict(ev.to_fields(applied)), f"apply failed: {result}"))
                continue
            outcomes[result.decode() if isinstance(result, bytes) else "relist"] += 1
            if observe_latency and not applied.is_marker:
                self.metrics.latency.observe(max(0, now_ns - applied.received_ns) / 1e9)
        for outcome, count in outcomes.items():
            self.metrics.results.labels(outcome).inc(count)
        if dead:
            self.dead_letter(dead)
        self.metrics.events_in.inc(len(entries))
        self.metrics.apply_seconds.observe(time.perf_counter() - started)
        return len(entries)

    def _run(self, queued: list[tuple[str, ev.StreamEvent | None]]) -> list[object]:
        """One reply per queued entry; reloads the scripts and resends on NOSCRIPT."""
        results = self._batch(queued).send(self.r) if queued else []
        missing = [i for i, result in enumerate(results) if is_noscript(result)]
        if missing:
            # Redis lost its script cache (a restart, SCRIPT FLUSH): what failed did
            # nothing, so sending the same calls again, in order, is safe.
            log.info("redis lost the apply scripts; loading them again")
            self.scripts.load(self.r)
            again = self._batch([queued[i] for i in missing]).send(self.r)
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    def _batch(self, queued: list[tuple[str, ev.StreamEvent | None]]) -> Batch:
        batch = Batch()
        group = self.settings.group
        for entry_id, event in queued:
            if event is None:
                batch.add(b"XACK", self.keys.stream, group, entry_id)
            elif event.type == ev.RELIST_END:
                self.scripts.relist_end(batch, event, group, entry_id)
            elif event.type == ev.RELIST_BEGIN:
                if group:
                    batch.add(b"XACK", self.keys.stream, group, entry_id)
                else:
                    batch.add(b"ECHO", b"relist")
            else:
                self.scripts.apply(batch, event, group, entry_id)
        return batch

    def dead_letter(self, dead: Sequence[tuple[str, dict[Any, Any], str]]) -> None:
        """Move entries to the dead-letter stream with the reason and original id; ack."""
        pipe = self.r.pipeline(transaction=True)
        for entry_id, fields, reason in dead:
            log.error("dead-lettered entry %s: %s", entry_id, reason, extra={"entry_id": entry_id})
            self.metrics.dead_lettered.labels(reason.split(":", 1)[0][:40]).inc()
            pipe.xadd(
                self.keys.dead_letter,
                {
                    **fields,
                    "dead_reason": reason,
                    "dead_id": entry_id,
                    "dead_group": self.settings.group,
                },
            )
            if self.settings.group:
                pipe.xack(self.keys.stream, self.settings.group, entry_id)
        pipe.execute()

    def reclaim(self) -> int:
        """Take over entries idle too long on other (dead) consumers; dead-letter
        entries delivered max_deliveries times (a poison entry must not stop us)."""
        s = self.settings
        stream, group = self.keys.stream, s.group
        try:
            pending = self.r.xpending_range(
                stream, group, min="-", max="+", count=s.batch_size, idle=s.reclaim_idle_ms
            )
        except redis.ResponseError:
            return 0  # no group yet
        poison = [p for p in pending if int(p["times_delivered"]) >= s.max_deliveries]
        if poison:
            dead: list[tuple[str, dict[Any, Any], str]] = []
            for p in poison:
                entry_id = text(p["message_id"])
                rows = self.r.xrange(stream, entry_id, entry_id)
                fields = dict(rows[0][1] or {}) if rows else {}
                dead.append(
                    (entry_id, fields, f"poison: delivered {text(p['times_delivered'])} times")
                )
            self.dead_letter(dead)
        if len(pending) == len(poison):
            return 0
        _, claimed, deleted = self.r.xautoclaim(
            stream, group, self.consumer, min_idle_time=s.reclaim_idle_ms, count=s.batch_size
        )
        if deleted:
            self.metrics.trimmed_pending.inc(len(deleted))
            self.r.xack(stream, group, *deleted)
        claimed = [c for c in claimed if c[1] is not None]
        if claimed:
            log.info("reclaimed %d pending entries from idle consumers", len(claimed))
            self.metrics.reclaimed.inc(len(claimed))
            self.apply(claimed)
        return len(claimed)

    def update_gauges(self) -> None:
        try:
            for g in self.r.xinfo_groups(self.keys.stream):
                if text(g["name"]) == self.settings.group:
                    self.metrics.pending.set(g["pending"])
                    self.metrics.lag.set(g.get("lag") or 0)
        except redis.RedisError:
            pass
