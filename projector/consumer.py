"""The consumer-group loop: read, apply (atomically with the ack), reclaim, dead-letter.

Redis refusing work (OOM, READONLY, MISCONF, ...: common/rediserrors.py) is the
server's condition, never an entry's: the projector backs off and sends the same
work again, holding the entries it read in memory (a re-read would count a
delivery toward --max-deliveries) and keeping them from other consumers'
reclaim. Only an entry that is itself bad goes to the dead-letter stream.
"""

import contextlib
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain
from typing import Any, Final, NamedTuple, Protocol, TypeVar

import msgspec
import redis

from common import events as ev
from common import mirror, resync
from common.keys import DEFAULT_GROUP, Keys
from common.records import DeadLetterNote, DeadReason, Outcome, dead_letter_fields
from common.redisconn import text
from common.rediserrors import ErrorClass, classify, describe, error_code, is_refusal
from common.resp import Arg, Batch, call
from projector.metrics import ProjectorMetrics
from projector.scripts import Ack, ApplySettings, Mode, Scripts, drive

log = logging.getLogger(__name__)

T = TypeVar("T")
Queued = tuple[str, ev.StreamEvent | None]


class Dead(NamedTuple):
    """An entry to dead-letter: its id, its fields as read, why (the label) and
    the details (the note's text)."""

    entry_id: str
    fields: dict[Any, Any]
    reason: DeadReason
    detail: str


class Sender(Protocol):
    """How the projector's batches reach Redis (RedisSender); unit tests give it a
    fake that answers each call as the scripts would (tests/fakes.py)."""

    def send(self, batch: Batch) -> list[object]:
        """The commands as a pipeline: one reply per command, error replies in place."""
        ...

    def send_transaction(self, batch: Batch) -> list[object]: ...

    def load_scripts(self) -> None: ...

    def keep(self, group: str, consumer: str, held: Sequence[str], count: int) -> None:
        """Reset the idle time of the held entries still pending on consumer."""
        ...

    def heartbeat(self, key: str, renew_only: bool) -> None:
        """Set the heartbeat key (our pid) with its TTL, or only renew the TTL."""
        ...


class RedisSender:
    def __init__(self, r: "redis.Redis", keys: Keys, scripts: Scripts) -> None:
        self.r, self.keys, self.scripts = r, keys, scripts

    def heartbeat(self, key: str, renew_only: bool) -> None:
        if renew_only:
            self.r.expire(key, mirror.HEARTBEAT_TTL_S)
        else:
            self.r.set(key, os.getpid(), ex=mirror.HEARTBEAT_TTL_S)

    def send(self, batch: Batch) -> list[object]:
        return batch.send(self.r)

    def send_transaction(self, batch: Batch) -> list[object]:
        return batch.send_transaction(self.r)

    def load_scripts(self) -> None:
        self.scripts.load(self.r)

    def keep(self, group: str, consumer: str, held: Sequence[str], count: int) -> None:
        stream = self.keys.stream
        lo, hi = min(held, key=_id_order), max(held, key=_id_order)
        wanted = {entry_id.encode() for entry_id in held}
        rows = call(self.r, b"XPENDING", stream, group, lo, hi, count, consumer)
        assert isinstance(rows, list)
        # Only ours: one another consumer took already stays where it is.
        ours = [row[0] for row in rows if row[0] in wanted]
        if ours:
            # XCLAIM ... JUSTID does not count a delivery.
            call(self.r, b"XCLAIM", stream, group, consumer, 0, *ours, b"JUSTID")


# The stream or the group was deleted under us (FLUSHALL, a restore): NOGROUP on
# the next read, UNBLOCKED for a read blocked at the time.
_GROUP_GONE: Final = frozenset({"NOGROUP", "UNBLOCKED"})


class ConsumerSettings(msgspec.Struct, frozen=True):
    group: str = DEFAULT_GROUP
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


class _StopRequestedError(Exception):
    """Asked to stop while backing off: what we hold stays pending, unacked."""


class Refusals:
    """One episode of Redis refusing our work: its backoff (0.1 s doubling to 5 s),
    its reason for /readyz, its metrics, and a log line when it starts (or its
    code changes) and one when it ends; never one per retry."""

    INITIAL_S: Final = 0.1
    MAXIMUM_S: Final = 5.0

    def __init__(
        self, metrics: ProjectorMetrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics, self._clock = metrics, clock
        self.reason = ""  # "" while Redis accepts our work
        self._code = ""
        self._delay = self.INITIAL_S
        self._since = 0.0
        self._count = 0

    def refused(self, exc: BaseException) -> float:
        """Count one refused attempt; the delay before the next."""
        code = error_code(exc)
        self.metrics.redis_refusals.labels(code).inc()
        self.reason = describe(exc)
        if not self._code:
            self._since, self._count, self._delay = self._clock(), 0, self.INITIAL_S
            self.metrics.redis_refusing.set(1)
        if code != self._code:
            log.warning(
                "redis refuses writes; backing off and retrying the same work, "
                "no entry is dead-lettered for it: %s",
                self.reason,
                extra={"code": code},
            )
            self._code = code
        self._count += 1
        delay, self._delay = self._delay, min(self._delay * 2, self.MAXIMUM_S)
        return delay

    def accepted(self) -> None:
        """Redis did what it refused before: the episode is over."""
        if not self._code:
            return
        log.warning(
            "redis accepts writes again after %.1f s and %d refused attempts",
            self._clock() - self._since,
            self._count,
            extra={"code": self._code},
        )
        self.interrupted()

    def interrupted(self) -> None:
        """Forget the episode without a verdict (the connection is gone: that is
        said on its own)."""
        self.reason, self._code = "", ""
        self.metrics.redis_refusing.set(0)


def _reply_class(reply: object) -> ErrorClass | None:
    """The class of an error reply; None for a reply that is not an error."""
    return classify(reply) if isinstance(reply, redis.RedisError) else None


def _is_relist_end(event: ev.StreamEvent | None) -> bool:
    return event is not None and event.type == ev.RELIST_END


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Backlog(msgspec.Struct, frozen=True):
    pending: int
    lag: int
    oldest_pending_age_s: float


class Projector:
    """One consumer in the group; run() until stop is set, finishing the batch in hand."""

    def __init__(
        self,
        r: "redis.Redis",
        keys: Keys,
        settings: ConsumerSettings,
        metrics: ProjectorMetrics,
        mode: Mode = Mode.ACK,
        sender: Sender | None = None,
    ) -> None:
        self.r, self.keys, self.settings, self.metrics = r, keys, settings, metrics
        # Mode.REPLAY: applies entries it is handed, outside any group (`replay`).
        self.mode = mode
        self.acking = mode is Mode.ACK
        self.consumer = settings.consumer or default_consumer_name()
        self.scripts = Scripts(keys, settings.apply)
        self.sender: Sender = sender or RedisSender(r, keys, self.scripts)
        self.refusals = Refusals(metrics)
        self.connected = False
        self._read_own_pending = True
        self._next_reclaim = 0.0
        self._stop = threading.Event()  # run() puts its own in
        # Entries held through a refusal have their idle time reset this often, well
        # inside the idle time at which other consumers reclaim (same setting).
        self._keep_every_s = settings.reclaim_idle_ms / 3000

    def readiness(self) -> tuple[bool, str]:
        """For /readyz: whether we apply entries, and if not, why."""
        if self.refusals.reason:
            return False, f"redis refuses writes: {self.refusals.reason}"
        if not self.connected:
            return False, "redis unreachable"
        return True, "ok"

    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; from start_id so a new
        deployment builds the full state."""
        try:
            self.r.xgroup_create(
                self.keys.stream, self.settings.group, id=self.settings.start_id, mkstream=True
            )
        except redis.ResponseError as exc:
            if error_code(exc) != "BUSYGROUP":
                raise
            return
        log.info("created consumer group %s", self.settings.group)
        if mirror.stream_trimmed(self.r, self.keys):
            # A new group on a stream that retention trimmed would build only what is
            # left of it: the watchers relist, so the state ends complete.
            request_id = resync.request(self.r, self.keys, resync.ResyncRequest(reason="new-group"))
            log.warning(
                "new group on a trimmed stream: asked the watchers to relist (resync %s)",
                request_id,
            )

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        try:
            while not stop.is_set():
                try:
                    self._run_once()
                except _StopRequestedError:
                    return
                except redis.RedisError as exc:
                    self._failed(exc)
        finally:
            self.retire()

    def _run_once(self) -> None:
        if not self.connected:
            self.ensure_group()
            self.sender.load_scripts()
            self.connected = True
            # After a connection error our own pending entries may be unapplied.
            self._read_own_pending = True
        self.step()
        # What Redis refused out here (creating the group, a read, a claim) was
        # just done again and worked.
        self.refusals.accepted()

    def _failed(self, exc: redis.RedisError) -> None:
        """Decide on an error out of the loop: back off, reconnect, recreate, or raise."""
        kind = classify(exc)
        if kind is ErrorClass.REFUSAL:
            # Nothing is held out here: each step starts over (and reclaims first).
            self._next_reclaim = 0.0
            self._wait_refused(exc, held=())
        elif kind is ErrorClass.UNREACHABLE:
            self._lost(exc)
        elif error_code(exc) in _GROUP_GONE:
            log.warning("consumer group gone, recreating it: %s", describe(exc))
            self.connected = False
        else:
            raise exc

    def _lost(self, exc: Exception) -> None:
        if self.connected:
            log.warning("redis connection lost: %s", exc)
        self.connected = False
        self.refusals.interrupted()
        self.metrics.reconnects.inc()
        self._stop.wait(1.0)

    def step(self) -> int:
        """Read and apply one batch; returns how many entries it handled."""
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self.settings.reclaim_every_s
            self.heartbeat()
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

    # ---- apply ----------------------------------------------------------------------------

    def apply(self, entries: Sequence[ev.Entry]) -> int:
        """Apply entries and ack them, each atomically with its state change."""
        if not entries:
            return 0
        started = time.perf_counter()
        queued, dead = self._parse(entries)
        results = self._run(queued)
        now_ns = time.time_ns()
        outcomes: Counter[Outcome] = Counter()
        # A replay (no group) applies old entries: their age is not a latency.
        observe_latency = self.acking
        debug = log.isEnabledFor(logging.DEBUG)  # the event log: tested once, not per entry
        for (entry_id, applied), result in zip(queued, results, strict=True):
            if applied is None:
                continue
            if isinstance(result, Exception):
                # Not a refusal (those were sent again until done): the entry's own fault.
                detail = f"apply failed: {describe(result)}"
                fields = dict(ev.to_fields(applied))
                dead.append(Dead(entry_id, fields, DeadReason.APPLY_FAILED, detail))
                continue
            # The scripts answer an outcome's name; relist.lua and XACK a count.
            outcome = Outcome(result.decode()) if isinstance(result, bytes) else Outcome.RELIST
            outcomes[outcome] += 1
            if debug:
                self._log_outcome(entry_id, applied, outcome)
            if observe_latency and not applied.is_marker:
                self.metrics.latency.observe(max(0, now_ns - applied.received_ns) / 1e9)
        for outcome, count in outcomes.items():
            self.metrics.results.labels(outcome).inc(count)
        if dead:
            self.dead_letter(dead)
        self.metrics.events_in.inc(len(entries))
        self.metrics.apply_seconds.observe(time.perf_counter() - started)
        return len(entries)

    def _log_outcome(self, entry_id: str, event: ev.StreamEvent, outcome: Outcome) -> None:
        """The event log (--log-level debug): one line per entry applied."""
        if event.is_marker:
            key = f"{event.type} {event.resource}/{event.namespace or '*'}"
        else:
            key = self.keys.state(event.kind, event.namespace, event.name)
        extra = {"key": key, "outcome": outcome.value, "rv": event.rv, "entry_id": entry_id}
        log.debug("applied", extra=extra)

    def _parse(self, entries: Sequence[ev.Entry]) -> tuple[list[Queued], list[Dead]]:
        """Entries to send and entries to dead-letter. Everything that can find an
        entry malformed runs here, before anything is sent, so one bad entry is
        dead-lettered alone and never fails the batch around it."""
        queued: list[Queued] = []
        dead: list[Dead] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if not fields:
                # Trimmed while pending (Redis 7 keeps the id, drops the fields).
                self.metrics.trimmed_pending.inc()
                if self.acking:
                    queued.append((entry_id, None))
                continue
            try:
                event = ev.from_fields(fields)
                if event.type == ev.RELIST_END:
                    ev.decode_members(event.members)  # Scripts.relist_end decodes them again
            except ev.MalformedEntryError as exc:
                dead.append(Dead(entry_id, fields, DeadReason.MALFORMED, str(exc)))
                continue
            queued.append((entry_id, event))
        return queued, dead

    def _run(self, queued: list[Queued]) -> list[object]:
        """One reply per queued entry. What Redis refused, or could not run for want
        of the scripts, is sent again (the same calls, in order) until answered.

        A resend is safe: Redis refuses a script call up front when it refuses
        writes (OOM, READONLY, MISCONF: the scripts start with "#!lua"), so it did
        nothing; one refused midway (an ACL denying a command the script runs:
        NOPERM) keeps the writes it made before, and apply.lua is idempotent by
        resourceVersion, skipping what it already holds. The entry is still pending
        (held on us, see _keep), so the scripts still apply it. Only the refused
        calls are resent: the order across objects does not matter to apply.lua and
        relist.lua, which decide by resourceVersion."""
        results: list[object] = [None] * len(queued)
        todo = list(range(len(queued)))
        while todo:
            held = [queued[i][0] for i in todo]
            # A RELIST_END is a run of calls of its own (Scripts.relist_end), after
            # the batch; an error reply ends its run, which is then sent again as a
            # whole (it resumes from the progress recorded in Redis).
            relists = [i for i in todo if _is_relist_end(queued[i][1])]
            batched = [i for i in todo if i not in relists]
            if batched:
                replies = self._attempt(partial(self._send, [queued[i] for i in batched]), held)
                for i, reply in zip(batched, replies, strict=True):
                    results[i] = reply
            for i in relists:
                results[i] = self._relist(queued[i], held)
            todo = self._again(queued, todo, results)
        return results

    def _relist(self, queued: Queued, held: Sequence[str]) -> object:
        """Run a RELIST_END's calls to its answer (or an error reply), one round trip
        each, keeping the held entries ours meanwhile: a relist of a large scope
        takes seconds, and must not look idle to other consumers' reclaim."""
        entry_id, event = queued
        assert event is not None
        keep_at = time.monotonic() + self._keep_every_s

        def send(batch: Batch) -> list[object]:
            nonlocal keep_at
            if time.monotonic() >= keep_at:
                self._keep(held)
                keep_at = time.monotonic() + self._keep_every_s
            return self._attempt(partial(self.sender.send, batch), held)

        steps = self.scripts.relist_end(event, Ack(self.mode, self.settings.group, entry_id))
        return drive(steps, send)

    def _send(self, queued: list[Queued]) -> list[object]:
        return self.sender.send(self._batch(queued))

    def _again(self, queued: list[Queued], todo: list[int], results: list[object]) -> list[int]:
        """Of todo, what to send again, after loading the scripts or backing off."""
        noscript = [i for i in todo if _reply_class(results[i]) is ErrorClass.NOSCRIPT]
        refused = [i for i in todo if _reply_class(results[i]) is ErrorClass.REFUSAL]
        if noscript:
            # Redis lost its script cache (a restart, SCRIPT FLUSH): what failed did nothing.
            log.info("redis lost the apply scripts; loading them again")
            self._attempt(self.sender.load_scripts, [queued[i][0] for i in noscript])
        if refused:
            exc = results[refused[0]]
            assert isinstance(exc, redis.RedisError)
            self._hold(exc, [queued[i][0] for i in refused])
        else:
            self.refusals.accepted()
        return sorted(noscript + refused)

    def _batch(self, queued: list[Queued]) -> Batch:
        batch = Batch()
        group = self.settings.group
        for entry_id, event in queued:
            ack = Ack(self.mode, group, entry_id)
            if event is None:
                batch.add(b"XACK", self.keys.stream, group, entry_id)
            elif event.type == ev.RELIST_BEGIN:
                if self.acking:
                    batch.add(b"XACK", self.keys.stream, group, entry_id)
                else:
                    batch.add(b"ECHO", Outcome.RELIST.value)
            else:
                self.scripts.apply(batch, event, ack)
        return batch

    # ---- refusals -------------------------------------------------------------------------

    def _attempt(self, work: Callable[[], T], held: Sequence[str]) -> T:
        """work(), done again after a back-off for as long as Redis refuses it."""
        while True:
            try:
                return work()
            except redis.RedisError as exc:
                if not is_refusal(exc):
                    raise
                self._hold(exc, held)

    def _hold(self, exc: redis.RedisError, held: Sequence[str]) -> None:
        """Back off while holding entries; out with _StopRequestedError if asked to stop."""
        self._wait_refused(exc, held)
        if self._stop.is_set():
            raise _StopRequestedError from exc

    def _wait_refused(self, exc: redis.RedisError, held: Sequence[str]) -> None:
        """Wait out one back-off delay, keeping held entries ours meanwhile."""
        deadline = time.monotonic() + self.refusals.refused(exc)
        while True:
            self._keep(held)
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.wait(min(left, self._keep_every_s)):
                return

    def _keep(self, held: Sequence[str]) -> None:
        """Reset the idle time of the held entries still pending on us, so another
        consumer's reclaim does not take them (and count a delivery) while we wait:
        XCLAIM ... JUSTID does not count one. Redis 7 allows XPENDING and XCLAIM
        under OOM."""
        if not self.acking or not held:
            return
        self.heartbeat(renew_only=True)
        count = len(held) + self.settings.batch_size
        try:
            self.sender.keep(self.settings.group, self.consumer, held, count)
        except redis.ResponseError as exc:
            if not is_refusal(exc):
                raise
            # Refused too (READONLY, NOPERM): then other consumers cannot claim either.

    # ---- dead letters and reclaim ---------------------------------------------------------

    def dead_letter(self, dead: Sequence[Dead]) -> None:
        """Move entries to the dead-letter stream with the reason and original id; ack."""
        batch = self._dead_letter_batch(dead)
        # The XADDs and XACKs in one transaction; refused (OOM) as a whole, and retried.
        self._attempt(partial(self.sender.send_transaction, batch), [d.entry_id for d in dead])
        self.refusals.accepted()
        for d in dead:
            log.error(
                "dead-lettered entry %s: %s", d.entry_id, d.detail, extra={"entry_id": d.entry_id}
            )
            self.metrics.dead_lettered.labels(d.reason).inc()
        self._relist_after_dead_relists(dead)

    def _relist_after_dead_relists(self, dead: Sequence[Dead]) -> None:
        """A RELIST_END dead-lettered may leave its sweep half done (objects the list
        did not hold still mirrored, the record `sweeping`): ask the watchers to
        relist its scope, whose newer sweep supersedes it. Found by an adversarial
        review: nothing but the dead-letter log said so."""
        for d in dead:
            try:
                event = ev.from_fields(d.fields)
            except ValueError:
                continue  # malformed: not a relist of any scope
            if event.type != ev.RELIST_END:
                continue
            wanted = resync.ResyncRequest(
                event.resource, event.namespace, reason="relist-dead-lettered"
            )
            try:
                request_id = resync.request(self.r, self.keys, wanted)
            except redis.RedisError as exc:
                log.error(  # noqa: TRY400 - one line: the error says it all
                    "could not ask for a relist after dead-lettering %s: %s", d.entry_id, exc
                )
                continue
            log.warning(
                "dead-lettered a relist's end: asked the watchers to relist %s/%s (resync %s)",
                wanted.resource,
                wanted.namespace or "*",
                request_id,
                extra={"entry_id": d.entry_id},
            )

    def _dead_letter_batch(self, dead: Sequence[Dead]) -> Batch:
        batch = Batch()
        group = self.settings.group
        for entry_id, fields, _, detail in dead:
            record = dead_letter_fields(fields, DeadLetterNote(detail, entry_id, group))
            batch.add(b"XADD", self.keys.dead_letter, b"*", *chain.from_iterable(record.items()))
            if self.acking:
                batch.add(b"XACK", self.keys.stream, group, entry_id)
        return batch

    def heartbeat(self, renew_only: bool = False) -> None:
        """Say this consumer is alive (`replay --rebuild` refuses to run under it).
        renew_only: while Redis refuses writes, EXPIRE (which it still takes) keeps
        the heartbeat alive though SET would be refused."""
        if not self.acking:
            return
        key = self.keys.projector(self.settings.group, self.consumer)
        # Housekeeping: a refusal here is met, and reported, by the applies.
        with contextlib.suppress(redis.RedisError):
            self.sender.heartbeat(key, renew_only)

    def retire(self) -> None:
        """Stopped: take the heartbeat back, so a rebuild may run at once."""
        if self.acking:
            with contextlib.suppress(redis.RedisError):
                self.r.delete(self.keys.projector(self.settings.group, self.consumer))

    def reclaim(self) -> int:
        """Take over entries idle too long on other (dead) consumers; dead-letter
        entries delivered max_deliveries times (a poison entry must not stop us).
        Entries held through a refusal never idle that long (see _keep)."""
        s = self.settings
        stream, group = self.keys.stream, s.group
        try:
            pending = self.r.xpending_range(
                stream, group, min="-", max="+", count=s.batch_size, idle=s.reclaim_idle_ms
            )
        except redis.ResponseError as exc:
            if error_code(exc) != "NOGROUP":
                raise
            return 0  # no group yet
        poison = [p for p in pending if int(p["times_delivered"]) >= s.max_deliveries]
        if poison:
            self.dead_letter([self._poison(p) for p in poison])
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

    def _poison(self, pending: dict[str, Any]) -> Dead:
        entry_id = text(pending["message_id"])
        rows = self.r.xrange(self.keys.stream, entry_id, entry_id)
        fields = dict(rows[0][1] or {}) if rows else {}
        detail = f"poison: delivered {text(pending['times_delivered'])} times"
        return Dead(entry_id, fields, DeadReason.POISON, detail)

    def backlog(self) -> "Backlog | None":
        """This group's pending entries, unread entries and the oldest pending entry's
        age (None: Redis did not answer)."""
        pending = lag = 0
        try:
            for g in self.r.xinfo_groups(self.keys.stream):
                if text(g["name"]) == self.settings.group:
                    pending, lag = int(g["pending"]), int(g.get("lag") or 0)
            oldest = self.r.xpending(self.keys.stream, self.settings.group)["min"]
        except redis.RedisError:
            return None
        age = 0.0
        if oldest is not None:
            age = max(0.0, time.time() - int(text(oldest).split("-")[0]) / 1000)
        return Backlog(pending, lag, age)
