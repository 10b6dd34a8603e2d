"""Batches watch events into Redis (XADD + guarded checkpoints in one MULTI/EXEC),
or into the disk spool while Redis is unreachable or refuses writes, and drains
the spool oldest first.

One thread owns all writes, so "the spool drains before any new event goes to
Redis" holds by construction: while the spool is not empty, new batches are
appended behind it. The same thread finds out when Redis forgot what it was
given (watcher/guard.py) and when an event had to be dropped (a full spool), and
asks the scope's reflector to relist in both cases: whoever drops, relists.
"""

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import msgspec
import redis

from common import rediserrors
from common import rv as rvs
from common.events import StreamEvent
from common.keys import DEFAULT_GROUP
from common.records import WatcherStatus
from common.redisconn import text
from watcher.appender import Appender
from watcher.fence import FencedError
from watcher.guard import ScopeGuard, Verdict
from watcher.metrics import WatcherMetrics
from watcher.retention import Retention
from watcher.spool import Spool, SpoolFullError

log = logging.getLogger(__name__)


# Evictions relist every scope at most this often: a Redis shared with a cache may
# evict all day long, and each relist LISTs every scope.
EVICTION_RELIST_EVERY_S = 60.0


def _log_events(entries: list[StreamEvent], where: list[str]) -> None:
    """The event log (--log-level debug): one line per event handled, and where it
    went (its stream id, "spooled" or "dropped"). Callers test the level first, so
    it costs nothing at info."""
    for event, went in zip(entries, where, strict=True):
        log.debug(
            "event",
            extra={
                "type": event.type,
                "resource": event.resource,
                "object": f"{event.namespace}/{event.name}" if event.namespace else event.name,
                "rv": event.rv,
                "stream_id": went,
            },
        )


def _writes(scopes: list[str], entries: list[StreamEvent]) -> list[tuple[str, str]]:
    """(scope, entry type) of each entry, in append order: what the guard plans on."""
    return [(scope, event.type) for scope, event in zip(scopes, entries, strict=True)]


class SpoolBatch(msgspec.Struct):
    """One spool record: entries and the checkpoints they carry, written together;
    the scope of each entry, and the guard marks the watcher had last written to
    Redis (so a watcher restarted while Redis is down still knows them)."""

    entries: list[StreamEvent]
    checkpoints: dict[str, str]
    scopes: list[str] = msgspec.field(default_factory=list)  # empty in older records
    marks: dict[str, int] = msgspec.field(default_factory=dict)
    # Scopes owing a relist when this was spooled: a watcher restarted before they
    # got it must not resume them from a checkpoint (they relist at start).
    owed: list[str] = msgspec.field(default_factory=list)


_encode_batch = msgspec.msgpack.Encoder().encode
_decode_batch = msgspec.msgpack.Decoder(SpoolBatch).decode


class Item(NamedTuple):
    """From a reflector: an event (None for a bookmark) and the scope's new checkpoint."""

    event: StreamEvent | None
    scope: str
    rv: str | None


class WriterSettings(msgspec.Struct, frozen=True):
    batch_size: int = 500
    # No artificial wait by default: what queues up while one MULTI/EXEC is in flight
    # becomes the next batch (group commit), so bursts batch and single events do not
    # wait. Measured: linger 5 ms cost 5 ms at p50 and bought no throughput (bench/).
    linger_s: float = 0.0
    group: str = DEFAULT_GROUP
    retention: Retention = Retention()
    trim_every_s: float = 10.0
    redis_probe_every_s: float = 1.0
    # Spool records are whatever batches formed during the outage (often a handful
    # of events): the drain packs records into transactions of about this many events.
    drain_events_per_tx: int = 2000
    queue_size: int = 20000
    # How often the marks of every scope are checked, so a quiet scope finds out
    # that Redis forgot it without waiting for its next event.
    guard_check_every_s: float = 1.0
    # Replicas that must acknowledge each append (WAIT), and how long to wait for them.
    min_replicas_acked: int = 0
    replica_ack_timeout_ms: int = 100


class StreamWriter:
    """Owns Redis writes for one watcher process."""

    def __init__(
        self,
        redis_: Appender,
        spool: Spool,
        metrics: WatcherMetrics,
        settings: WriterSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis, self._spool, self._clock = redis_, spool, clock
        self._metrics, self._settings = metrics, settings
        self.queue: queue.Queue[Item] = queue.Queue(maxsize=settings.queue_size)
        # Set while the spool is full: reflectors stop reading and relist when it clears.
        self.overflow = threading.Event()
        self.redis_up = False
        self._next_probe = 0.0
        self._next_trim = 0.0
        self._next_status = 0.0
        self._last_event_ns = 0
        # A drain spans many housekeeping rounds: when it began and what it moved so far.
        self._drain_began: float | None = None
        self._drain_events = 0
        self.watcher_id = f"{socket.gethostname()}-{os.getpid()}"
        self.guard = ScopeGuard(self.watcher_id)
        # scope -> why it relists at start whatever its checkpoint: the spool lost
        # records (corrupt on disk), or it owed a relist when the watcher stopped.
        self.relist_at_start: dict[str, str] = {}
        self.spool_lost_records = spool.quarantined
        self._next_guard_check = 0.0
        self._relisters: dict[str, Callable[[str], None]] = {}
        # Relists owed by scopes whose reflector has not registered yet (the spool
        # drains as the watcher starts): asked as soon as it does. Both under the lock.
        self._unasked: dict[str, str] = {}
        self._relisters_lock = threading.Lock()
        self._conflict_logged: dict[str, float] = {}
        self._replicas_short_logged = -3600.0
        # Why Redis took nothing last time ("" while writes go through): /readyz says it.
        self.redis_problem = ""
        self.cluster_uid = ""  # set once known (watcher/identity.py)
        self._evicted: int | None = None
        self._eviction_pending = False
        # The uid of another cluster found in Redis: run.py exits so the restart wipes.
        self.foreign_cluster = ""
        # Set once a newer owner of the shard fenced us off: nothing more is written
        # (not even the spool drained) and run.py exits (watcher/fence.py).
        self.fenced: FencedError | None = None
        self._last_eviction_relist = -EVICTION_RELIST_EVERY_S
        # What /readyz says, published in the watcher's status for `kube2redis status`.
        self.describe: Callable[[], str] = lambda: ""
        self._update_spool_gauges()

    def forget_everything(self) -> None:
        """The mirror was wiped (watcher/identity.py): what the spool holds and the
        marks we wrote belong to it."""
        if len(self._spool):
            log.warning("dropping %d spooled records of the wiped mirror", len(self._spool))
            self._spool.pop(len(self._spool))
        self.guard = ScopeGuard(self.watcher_id)
        self._update_spool_gauges()

    def on_relist(self, scope: str, request: Callable[[str], None]) -> None:
        """How to ask scope's reflector to relist (called with the reason); a
        relist it owes already is asked at once."""
        with self._relisters_lock:
            self._relisters[scope] = request
            reason = self._unasked.pop(scope, None)
        if reason is not None:
            request(reason)

    # ---- startup --------------------------------------------------------------------------

    def load_checkpoints(self) -> dict[str, str]:
        """Per-scope resume points: Redis's, overridden by newer ones still in the
        spool; and the guard marks last written (the higher of Redis's and the
        spool's: a lower one in Redis is a loss the first append will find)."""
        checkpoints: dict[str, str] = {}
        marks: dict[str, int] = {}
        try:
            self._redis.raise_fence()  # first: an older owner still writing stops now
            checkpoints, marks = self._redis.stored()
            self._set_up(True)
        except redis.RedisError as exc:
            log.warning("redis unreachable at start, spooling: %s", exc)
            self._set_up(False, exc)
        except FencedError as exc:
            self._fenced_off(exc)
            return {}
        owed: list[str] = []
        for payload in self._spool.records():
            try:
                record = _decode_batch(payload)
            except msgspec.DecodeError:
                self.spool_lost_records += 1  # what it held is gone: relisted below
                continue
            for scope, rv in record.checkpoints.items():
                if scope not in checkpoints or rvs.newer(rv, checkpoints[scope]):
                    checkpoints[scope] = rv
            for scope, mark in record.marks.items():
                marks[scope] = max(mark, marks.get(scope, 0))
            owed = record.owed  # the newest record says which relists were still owed
        self.guard.load(marks)
        if self.spool_lost_records:
            log.error(
                "the spool lost %d records (corrupt on disk): every scope relists",
                self.spool_lost_records,
            )
            self._metrics.spool_lost_records.inc(self.spool_lost_records)
            self.relist_at_start = dict.fromkeys(checkpoints, "spool-corrupt")
            # Until a relist lands, the records drained after the lost one must not
            # move a checkpoint past it (a restart then resumes from before it).
            for scope in {*checkpoints, *marks}:
                self.guard.owe_relist(scope)
            return {}
        for scope in owed:
            checkpoints.pop(scope, None)
            self.relist_at_start[scope] = "owed"
            self.guard.owe_relist(scope)
        return checkpoints

    # ---- main loop ------------------------------------------------------------------------

    def put(self, item: Item, stop: threading.Event) -> None:
        """Hand an item to the writer; blocks while the queue is full (backpressure)."""
        while not stop.is_set():
            try:
                self.queue.put(item, timeout=0.5)
            except queue.Full:
                continue
            else:
                return

    def run(self, stop: threading.Event) -> None:
        """Write until stop is set and the queue is empty; then flush and fsync."""
        while self.turn(stop):
            pass
        self._spool.close()
        log.info("writer stopped", extra={"spooled_records": len(self._spool)})

    def turn(self, stop: threading.Event, wait_s: float | None = None) -> bool:
        """One round: the next batch (waiting up to wait_s for it, default: as idle
        as the state allows) appended, spooled or dropped, then housekeeping (probe,
        drain, check, trim, status). False once stop is set and nothing is left, or
        once this watcher is fenced off."""
        if self.fenced is not None:
            return False
        try:
            batch = self._collect(stop, self._idle_wait(stop) if wait_s is None else wait_s)
            if batch:
                self._flush(batch)
            elif stop.is_set():
                return False
            self._housekeeping()
        except FencedError as exc:
            # The batch in hand is neither appended nor spooled: the newer owner
            # resumes from the shard's checkpoints, which never passed it.
            self._fenced_off(exc)
            return False
        return True

    def _fenced_off(self, exc: FencedError) -> None:
        self.fenced = exc
        self._metrics.fenced.inc()
        log.error(
            "fenced off: %s; this watcher writes nothing more to it (its spool of %d "
            "records is not drained) and exits",
            exc,
            len(self._spool),
            extra={"fence": exc.stored, "ours": exc.token},
        )

    def _idle_wait(self, stop: threading.Event) -> float:
        """How long to wait for new events before housekeeping: not at all while a
        spool waits to drain into a reachable Redis."""
        if self.redis_up and len(self._spool):
            return 0.001
        return 0.05 if stop.is_set() else 0.2

    def _collect(self, stop: threading.Event, wait_s: float) -> list[Item]:
        try:
            first = self.queue.get(timeout=wait_s) if wait_s > 0 else self.queue.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._settings.linger_s
        while len(batch) < self._settings.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _flush(self, batch: list[Item]) -> None:
        entries = [item.event for item in batch if item.event is not None]
        scopes = [item.scope for item in batch if item.event is not None]
        checkpoints: dict[str, str] = {}
        for item in batch:
            if item.rv:
                checkpoints[item.scope] = item.rv
        if entries:
            self._last_event_ns = entries[-1].received_ns
        if self.overflow.is_set():
            self._drop(batch)
            return
        if len(self._spool) == 0 and self.redis_up:
            try:
                self._write(entries, scopes, checkpoints)
            except redis.RedisError as exc:
                self._set_up(False, exc)
            else:
                return
        # Only the checkpoints the guard would let move: a scope owing a relist must
        # not resume past its loss from a spooled checkpoint after a restart.
        plan = self.guard.plan(_writes(scopes, entries), checkpoints)
        record = SpoolBatch(
            entries, plan.checkpoints, scopes, dict(self.guard.expected), sorted(plan.owed_after)
        )
        try:
            self._spool.append(_encode_batch(record))
            self._metrics.spooled.inc(len(entries))
            if log.isEnabledFor(logging.DEBUG):
                _log_events(entries, ["spooled"] * len(entries))
        except SpoolFullError as exc:
            log.error("spool full, stop reading watches until Redis is back: %s", exc)  # noqa: TRY400 - expected state, no traceback
            self.overflow.set()
            self._drop(batch)
        self._update_spool_gauges()

    def _drop(self, batch: list[Item]) -> None:
        """The spool is full: these items go nowhere, so their scopes relist (and
        keep their checkpoints until then), whatever the reflectors saw."""
        dropped = [item.event for item in batch if item.event is not None]
        self._metrics.dropped.inc(len(dropped))
        if log.isEnabledFor(logging.DEBUG):
            _log_events(dropped, ["dropped"] * len(dropped))
        for scope in dict.fromkeys(item.scope for item in batch):
            self._owe_relist(scope, "spool-full")

    def _our_scopes(self) -> list[str]:
        with self._relisters_lock:
            return list(self._relisters)

    def _owe_relist(self, scope: str, reason: str) -> None:
        self.guard.owe_relist(scope)
        with self._relisters_lock:
            request = self._relisters.get(scope)
            if request is None:
                self._unasked[scope] = reason
                return
        request(reason)

    def _write(
        self, entries: list[StreamEvent], scopes: list[str], checkpoints: dict[str, str]
    ) -> None:
        started = time.perf_counter()
        plan = self.guard.plan(_writes(scopes, entries), checkpoints)
        appended = self._redis.append(entries, self.guard.append_args(plan))
        self._metrics.append_seconds.observe(time.perf_counter() - started)
        self._metrics.events_out.inc(len(entries))
        if log.isEnabledFor(logging.DEBUG):
            _log_events(entries, [text(i) for i in appended.ids])
        if appended.replicas is not None and appended.replicas < self._settings.min_replicas_acked:
            self._replicas_short(appended.replicas)
        self._written()
        self._report(self.guard.committed(plan, appended.guard))

    def _replicas_short(self, acked: int) -> None:
        """Fewer replicas than asked took the append in time: it holds on the primary,
        and a failover before they catch up can lose it (the guard would find that
        loss and relist). Counted, and said once a minute."""
        self._metrics.replica_acks_short.inc()
        now = self._clock()
        if now - self._replicas_short_logged >= 60.0:
            self._replicas_short_logged = now
            log.warning(
                "an append reached %d of %d replicas in time (--min-replicas-acked)",
                acked,
                self._settings.min_replicas_acked,
            )

    def _written(self) -> None:
        if self.redis_problem:
            log.info("redis takes writes again")
            self.redis_problem = ""

    def _report(self, verdict: Verdict) -> None:
        """Say what the guard found, and relist what Redis lost. Verdicts are about
        our own scopes only (what we appended, or checked: other watchers on this
        Redis answer for theirs), also before their reflectors registered."""
        if verdict.losses:
            # The change feed forgot too (or went back): its readers must read afresh.
            with contextlib.suppress(redis.RedisError):
                self._redis.reset_changes()
        for loss in verdict.losses:
            self._metrics.redis_losses.inc()
            log.warning(
                "redis lost writes of %s (its mark is %s, we wrote %d): relisting it",
                loss.scope,
                loss.stored or "gone",
                loss.expected,
                extra={"scope": loss.scope},
            )
            self._owe_relist(loss.scope, "redis-lost")
        now = self._clock()
        for conflict in verdict.conflicts:
            self._metrics.scope_conflicts.inc()
            if now - self._conflict_logged.get(conflict.scope, -3600.0) >= 60.0:
                self._conflict_logged[conflict.scope] = now
                log.warning(
                    "another writer appends to %s (its mark %d is past ours, %d): is a "
                    "second watcher running with the same resources?",
                    conflict.scope,
                    conflict.stored,
                    conflict.expected,
                    extra={"scope": conflict.scope},
                )

    # ---- spool drain, trim, status --------------------------------------------------------

    def _housekeeping(self) -> None:
        now = self._clock()
        self._spool.maybe_sync()
        if not self.redis_up and now >= self._next_probe:
            self._next_probe = now + self._settings.redis_probe_every_s
            try:
                self._redis.ping()
                self._set_up(True)
            except redis.RedisError:
                pass
        if self.redis_up and len(self._spool):
            self._drain(budget_s=0.25)
        if self.redis_up and not len(self._spool) and now >= self._next_guard_check:
            self._next_guard_check = now + self._settings.guard_check_every_s
            self._check_marks()
        if self.redis_up and not len(self._spool) and self.overflow.is_set():
            log.info("spool drained after overflow; reflectors will relist")
            self.overflow.clear()
        if self.redis_up and now >= self._next_trim:
            self._next_trim = now + self._settings.trim_every_s
            try:
                self._redis.trim(self._settings.group, self._settings.retention)
            except redis.RedisError as exc:
                self._set_up(False, exc)
            except Exception:
                # Retention is housekeeping: a bug in it must not stop the appends.
                log.exception("stream trim failed; appends go on, trimming retries later")
        if self.redis_up and now >= self._next_status:
            self._next_status = now + 5.0
            self._publish_status()

    def _check_marks(self) -> None:
        """Does Redis still hold every scope's mark (a quiet scope's loss), and did it
        evict keys (a maxmemory-policy other than noeviction drops state keys the
        marks cannot tell)? Also puts the cluster's identity back if Redis lost it."""
        args, scopes = self.guard.check_args(self._our_scopes())
        try:
            checked = self._redis.check(args)
        except redis.RedisError as exc:
            self._set_up(False, exc)
            return
        # A check that found a loss has put our mark back (guard.lua): its verdict is
        # reported even when the other replies failed, or the loss would go unseen.
        if not isinstance(checked.guard, redis.RedisError):
            self._report(self.guard.checked(scopes, checked.guard))
        if checked.failed is not None:
            self._set_up(False, checked.failed)
            return
        try:
            self._check_cluster(checked.cluster)
        except redis.RedisError as exc:
            self._set_up(False, exc)
            return
        self._notice_evictions(checked.evicted)
        if checked.used_memory is not None:
            self._metrics.redis_used_memory.set(checked.used_memory)
        if checked.maxmemory is not None:
            self._metrics.redis_maxmemory.set(checked.maxmemory)

    def _check_cluster(self, stored: str | None) -> None:
        """The mirror's cluster identity: put back if Redis lost it; another cluster's
        (Redis was not answering when this watcher started, so nobody compared) means
        the watcher must restart, to wipe the mirror (watcher/identity.py)."""
        if not self.cluster_uid:
            return
        if stored is None:
            self._redis.put_cluster(self.cluster_uid)
        elif stored != self.cluster_uid and not self.foreign_cluster:
            self.foreign_cluster = stored

    def _notice_evictions(self, evicted: int | None) -> None:
        if evicted is None:
            return
        before, self._evicted = self._evicted, evicted
        # A count lower than before: Redis restarted (or CONFIG RESETSTAT), and what
        # it counts now was evicted since then.
        new = evicted - before if before is not None and evicted >= before else evicted
        if before is not None and new > 0:
            log.warning(
                "redis evicted %d keys (maxmemory-policy is not noeviction): every scope relists",
                new,
            )
            self._metrics.redis_evictions.inc(new)
            self._eviction_pending = True
        now = self._clock()
        if self._eviction_pending and now - self._last_eviction_relist >= EVICTION_RELIST_EVERY_S:
            self._last_eviction_relist, self._eviction_pending = now, False
            scopes = self._our_scopes()
            # What was evicted sits behind checkpoints that are intact: drop them, so a
            # watcher restarted before its relist lands lists instead of resuming.
            with contextlib.suppress(redis.RedisError):  # the next check says why
                self._redis.forget_checkpoints(scopes)
            for scope in scopes:
                self._owe_relist(scope, "redis-evicted")

    def _drain(self, budget_s: float) -> None:
        deadline = time.monotonic() + budget_s
        if self._drain_began is None:
            self._drain_began, self._drain_events = time.monotonic(), 0
        drained = 0
        while len(self._spool) and time.monotonic() < deadline:
            entries, scopes, checkpoints, records = self._oldest_spooled()
            try:
                self._write(entries, scopes, checkpoints)
            except redis.RedisError as exc:
                self._set_up(False, exc)
                break
            self._spool.pop(records)
            drained += len(entries)
        self._update_spool_gauges()
        self._metrics.drained.inc(drained)
        self._drain_events += drained
        if len(self._spool) == 0:
            took = time.monotonic() - self._drain_began
            self._metrics.last_drain_seconds.set(took)
            self._metrics.last_drain_events.set(self._drain_events)
            log.info(
                "spool drained: %d entries in %.2f s",
                self._drain_events,
                took,
                extra={"drained": self._drain_events, "seconds": round(took, 3)},
            )
            self._drain_began = None
        elif drained:
            log.info(
                "drained %d entries from the spool, %d records left",
                drained,
                len(self._spool),
                extra={"drained": drained, "left": len(self._spool)},
            )

    def _oldest_spooled(self) -> tuple[list[StreamEvent], list[str], dict[str, str], int]:
        """The oldest spool records making up about one drain transaction: their
        entries, the scope of each, the checkpoints they carry and how many records
        that is."""
        entries: list[StreamEvent] = []
        scopes: list[str] = []
        checkpoints: dict[str, str] = {}
        records = 0
        while len(entries) < self._settings.drain_events_per_tx:
            chunk = self._spool.peek(256, start=records)
            if not chunk:
                break
            for payload in chunk:
                try:
                    batch = _decode_batch(payload)
                except msgspec.DecodeError:
                    self._lost_spool_record()
                    records += 1
                    continue
                entries.extend(batch.entries)
                # Records spooled before scopes were recorded: scope unknown ("").
                scopes.extend(batch.scopes or [""] * len(batch.entries))
                checkpoints.update(batch.checkpoints)
                records += 1
                if len(entries) >= self._settings.drain_events_per_tx:
                    break
        return entries, scopes, checkpoints, records

    def _lost_spool_record(self) -> None:
        """A spool record that does not decode: what it held is lost, for a scope
        we cannot tell, so every scope relists."""
        log.error("a spool record does not decode: every scope relists")
        self._metrics.spool_lost_records.inc()
        for scope in self._our_scopes():
            self._owe_relist(scope, "spool-corrupt")

    def _publish_status(self) -> None:
        status = WatcherStatus(
            pid=os.getpid(),
            spool_bytes=self._spool.size_bytes,
            spool_records=len(self._spool),
            spool_dir=str(self._spool.directory),
            last_event_ns=self._last_event_ns,
            updated_ns=time.time_ns(),
            health=self.describe(),
        )
        try:
            self._redis.publish(self.watcher_id, status)
        except redis.RedisError as exc:
            self._set_up(False, exc)

    def _set_up(self, up: bool, exc: Exception | None = None) -> None:
        if up and not self.redis_up:
            log.info("redis reachable")
            self._metrics.reconnects.labels("redis").inc()
        if not up and exc is not None:
            refusal = rediserrors.is_refusal(exc)
            problem = (
                f"redis refuses writes ({rediserrors.describe(exc)})"
                if refusal
                else f"redis unreachable ({rediserrors.describe(exc)})"
            )
            if problem != self.redis_problem:  # once per condition, not once per retry
                log.warning("%s, spooling to %s", problem, self._spool.directory)
            self.redis_problem = problem
            if refusal:
                self._metrics.redis_refusals.labels(rediserrors.error_code(exc)).inc()
        self.redis_up = up
        self._metrics.redis_up.set(1 if up else 0)

    def _update_spool_gauges(self) -> None:
        self._metrics.spool_bytes.set(self._spool.size_bytes)
        self._metrics.spool_records.set(len(self._spool))
