"""Calls of the Lua scripts, with their KEYS and ARGV laid out in one place.

Calls are EVALSHA commands added to a hand-packed batch (common/resp.py); a
NOSCRIPT reply (Redis restarted or its script cache flushed) is answered by
load() and a resend of the same calls. Each script is lua/shared.lua put in
front of the script's own text, so the rules they share are written once.

An object event is one call of apply.lua. A RELIST_END is a run of calls, one
round trip each (Scripts.relist_end, steps described in lua/relist.lua), so that
no call holds Redis for longer than one chunk's work whatever the scope's size.
"""

import enum
import hashlib
import os
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec
import redis
from redis.exceptions import NoScriptError

from common.events import StreamEvent, decode_members
from common.indexes import Values, fields_arg, indexed_arg, split_indexed, values_of
from common.keys import Keys
from common.records import Outcome
from common.resp import Arg, Batch

# Set only by the chaos run that shows its checker catches a broken projector
# (chaos/world.py): apply.lua without its resourceVersion compare.
BREAK_CAS_ENV = "KUBE2REDIS_CHAOS_BREAK_CAS"
LUA_DIR = Path(__file__).with_name("lua")
SHEBANG = b"#!lua\n"


class Mode(enum.StrEnum):
    """How a script treats the entry it applies."""

    ACK = "ack"  # a group's consumer: only a pending entry applies, acked in the same call
    REPLAY = "replay"  # `kube2redis replay`: the group is not touched


class Ack(NamedTuple):
    """Where an applied entry is acknowledged (ignored in Mode.REPLAY)."""

    mode: Mode
    group: str
    entry_id: str


class ApplyKeys(NamedTuple):
    """apply.lua's named KEYS, in its order; the index sets of the object's new
    values follow them."""

    state: str
    kind_index: str
    counts: str
    records: str
    tombstone: str
    changes: str
    relist_ns: str
    relist_ns_members: str
    relist_ns_sweep: str
    relist_all: str
    relist_all_members: str
    relist_all_sweep: str
    stream: str


class ApplyArgs(NamedTuple):
    """apply.lua's ARGV, in its order."""

    typ: str
    rv: str
    object: bytes
    member: str
    tombstone_ttl: int
    phase: str
    changes_maxlen: int
    uid: str
    by_prefix: str
    fields: str
    indexed: str
    mode: str
    group: str
    entry_id: str


class RelistStageKeys(NamedTuple):
    """relist_stage.lua's KEYS, in its order."""

    staging: str
    stream: str
    relist: str
    sweep: str


class RelistStageArgs(NamedTuple):
    """relist_stage.lua's named ARGV, in its order; a chunk of members follows them."""

    tombstone_ttl: int
    mode: str
    group: str
    entry_id: str
    list_rv: str


class RelistKeys(NamedTuple):
    """relist.lua's KEYS, in its order."""

    relist: str
    staging: str
    sweep: str
    relist_members: str
    kind_index: str
    counts: str
    records: str
    changes: str
    stream: str


class RelistArgs(NamedTuple):
    """relist.lua's ARGV, in its order."""

    list_rv: str
    staged: int
    purge: str
    mode: str
    group: str
    entry_id: str


class RelistScanKeys(NamedTuple):
    """relist_scan.lua's KEYS, in its order."""

    relist: str
    kind_index: str
    sweep: str
    records: str


class RelistScanArgs(NamedTuple):
    """relist_scan.lua's ARGV, in its order."""

    list_rv: str
    scope: str
    fields: str
    scan_count: int


class RelistSweepKeys(NamedTuple):
    """relist_sweep.lua's named KEYS, in its order; each candidate's state and
    tombstone keys follow them, then the index sets the candidates' records name."""

    relist: str
    relist_members: str
    sweep: str
    kind_index: str
    counts: str
    records: str
    changes: str
    stream: str


class RelistSweepArgs(NamedTuple):
    """relist_sweep.lua's named ARGV, in its order; the candidates follow them, then
    their records (RECORDED or NOT_RECORDED)."""

    list_rv: str
    cursor: str
    next_cursor: str  # "": a part of a scan's candidates, more to come: the cursor stays
    tombstone_ttl: int
    changes_maxlen: int
    by_prefix: str
    fields: str
    mode: str
    group: str
    entry_id: str


# How relist_sweep.lua is told a candidate's index record: "+" and the values (which
# may be "": a Pod without a phase), or "-": none.
RECORDED, NOT_RECORDED = "+", "-"


class RelistStep(enum.StrEnum):
    """What the relist scripts answer between a RELIST_END's first call and its last
    (never an Outcome: the last answers one, or a count)."""

    STAGE = "stage"  # relist.lua: the staging set lacks members: stage the list
    STAGED = "staged"  # relist_stage.lua: a chunk is in
    SWEEPING = "sweeping"  # relist.lua: this list's sweep runs (begun or resumed)
    ENDED = "ended"  # relist_scan.lua: the sweep is no longer this list's
    FOUND = "found"  # relist_scan.lua: candidates to sweep
    SCANNED = "scanned"  # relist_scan.lua: none in this chunk
    MOVED = "moved"  # relist_sweep.lua: the cursor moved since the scan: scan again
    RETRY = "retry"  # relist_sweep.lua: a candidate's record changed since the scan
    LOST = "lost"  # relist_scan.lua: the sweep's set lost members: stage the list again


# How many times a RELIST_END's sweep starts again from its staging after losing its
# set of listed members, before the entry is left pending (and retried as any error).
RELIST_RESTARTS = 3

# A run of calls, each reply fed back in: Scripts.relist_end, driven by drive().
Steps = Generator[Batch, list[object], object]


class RelistIncompleteError(redis.ResponseError):
    """A RELIST_END's run did not end within its bound of calls (see Scripts.relist_end)."""


class ApplySettings(msgspec.Struct, frozen=True):
    tombstone_ttl_s: int = 7 * 24 * 3600  # must outlive stream retention
    changes_maxlen: int = 100_000
    # A RELIST_END's chunks: members staged per call, and the SSCAN COUNT of each
    # scan of the index. At these sizes a call does 1.5-3.5 ms of work at 100,000
    # objects in one scope, against 104 ms for one call of the whole list; a relist
    # is ~460 calls, 0.35-0.75 s (bench/relist.py).
    relist_stage_chunk: int = 1000
    relist_scan_count: int = 500
    # Candidates deleted per call: a scope whose list is empty (100,000 deletes)
    # took 26 ms a call at the scan's 500.
    relist_sweep_chunk: int = 50
    # Bounds a run's calls: rounds of staging (a concurrent consumer can take the
    # staging set away, see relist.lua) and scan/sweep calls (each moves the cursor
    # unless another consumer moved it, which also advances the sweep).
    relist_stage_rounds: int = 5
    relist_max_sweep_calls: int = 1_000_000


class Script(msgspec.Struct, frozen=True):
    source: bytes
    sha: bytes

    @classmethod
    def read(cls, name: str) -> "Script":
        """lua/<name> with lua/shared.lua put in front (after its "#!lua" line)."""
        own = (LUA_DIR / name).read_bytes()
        assert own.startswith(SHEBANG), f"{name} must start with {SHEBANG!r}"
        source = SHEBANG + (LUA_DIR / "shared.lua").read_bytes() + own[len(SHEBANG) :]
        return cls(source, hashlib.sha1(source, usedforsecurity=False).hexdigest().encode())

    def without_cas(self) -> "Script":
        """This script with its stored-version check taken out (see BREAK_CAS_ENV)."""
        source = self.source.replace(b"if stored then", b"if false then", 1)
        assert source != self.source, "apply.lua changed: the chaos switch needs updating"
        return Script(source, hashlib.sha1(source, usedforsecurity=False).hexdigest().encode())

    def call(self, batch: Batch, keys: Sequence[str], args: Sequence[Arg]) -> None:
        batch.add(b"EVALSHA", self.sha, len(keys), *keys, *args)


def is_noscript(reply: object) -> bool:
    return isinstance(reply, NoScriptError)


class Scripts:
    """The apply and relist scripts for one key layout."""

    def __init__(self, keys: Keys, settings: ApplySettings) -> None:
        self.keys, self.settings = keys, settings
        self.apply_script = Script.read("apply.lua")
        if os.environ.get(BREAK_CAS_ENV) == "1":
            self.apply_script = self.apply_script.without_cas()
        self.stage_script = Script.read("relist_stage.lua")
        self.relist_script = Script.read("relist.lua")
        self.scan_script = Script.read("relist_scan.lua")
        self.sweep_script = Script.read("relist_sweep.lua")

    def load(self, r: "redis.Redis") -> None:
        """Put every script in Redis's script cache."""
        for script in (
            self.apply_script,
            self.stage_script,
            self.relist_script,
            self.scan_script,
            self.sweep_script,
        ):
            r.script_load(script.source)

    def by_sets(self, kind: str, joined: str) -> list[str]:
        """The index sets an object whose indexed values are `joined` is in."""
        return [self.keys.by(kind, f, v) for f, v in split_indexed(kind, joined).items() if v]

    def apply(self, batch: Batch, event: StreamEvent, ack: Ack) -> None:
        """Add the change an object event makes (and the entry's XACK) to batch."""
        k = self.keys
        # One decode gives the change feed's phase and the indexed values.
        values = values_of(event.object) if event.object else Values()
        keys = ApplyKeys(
            state=k.state(event.kind, event.namespace, event.name),
            kind_index=k.index(event.kind),
            counts=k.counts(event.kind),
            records=k.index_records(event.kind),
            tombstone=k.tombstone(event.kind, event.namespace, event.name),
            changes=k.changes,
            relist_ns=k.relist(event.kind, event.namespace),
            relist_ns_members=k.relist_members(event.kind, event.namespace),
            relist_ns_sweep=k.relist_sweep(event.kind, event.namespace),
            relist_all=k.relist(event.kind, ""),
            relist_all_members=k.relist_members(event.kind, ""),
            relist_all_sweep=k.relist_sweep(event.kind, ""),
            stream=k.stream,
        )
        indexed = indexed_arg(event.kind, values)
        args = ApplyArgs(
            typ=event.type,
            rv=event.rv,
            object=event.object,
            member=k.member(event.namespace, event.name),
            tombstone_ttl=self.settings.tombstone_ttl_s,
            phase=values.phase,
            changes_maxlen=self.settings.changes_maxlen,
            uid=event.uid,
            by_prefix=k.by_prefix(event.kind),
            fields=fields_arg(event.kind),
            indexed=indexed,
            mode=ack.mode,
            group=ack.group,
            entry_id=ack.entry_id,
        )
        self.apply_script.call(batch, (*keys, *self.by_sets(event.kind, indexed)), args)

    def relist_end(self, event: StreamEvent, ack: Ack) -> Steps:
        """A RELIST_END's calls, one Batch of one call at a time (the reply of each
        is sent back in); returns the entry's answer: the objects it deleted, or
        the Outcome's name (bytes) when not a count. See lua/relist.lua."""
        k, s = self.keys, self.settings
        kind, scope, list_rv = event.kind, event.namespace, event.rv
        members = list(dict.fromkeys(decode_members(event.members)))  # the count must be exact
        staging = k.relist_staging(kind, scope, list_rv)
        begin = _one(
            self.relist_script,
            RelistKeys(
                relist=k.relist(kind, scope),
                staging=staging,
                sweep=k.relist_sweep(kind, scope),
                relist_members=k.relist_members(kind, scope),
                kind_index=k.index(kind),
                counts=k.counts(kind),
                records=k.index_records(kind),
                changes=k.changes,
                stream=k.stream,
            ),
            RelistArgs(
                list_rv=list_rv,
                staged=len(members),
                purge="1" if event.purge else "",
                mode=ack.mode,
                group=ack.group,
                entry_id=ack.entry_id,
            ),
        )
        # Again from the staging when the sweep's set lost members midway (evicted, or
        # a Redis that lost it): relist_scan.lua says so, relist.lua restarts it.
        for _ in range(RELIST_RESTARTS):
            stage_keys = RelistStageKeys(
                staging=staging,
                stream=k.stream,
                relist=k.relist(kind, scope),
                sweep=k.relist_sweep(kind, scope),
            )
            stage_args = RelistStageArgs(
                s.tombstone_ttl_s, ack.mode, ack.group, ack.entry_id, list_rv
            )
            for _ in range(s.relist_stage_rounds):
                (reply,) = yield begin
                if reply != RelistStep.STAGE.encode():
                    break
                for i in range(0, len(members), s.relist_stage_chunk):
                    chunk = members[i : i + s.relist_stage_chunk]
                    (staged,) = yield _one(self.stage_script, stage_keys, (*stage_args, *chunk))
                    if staged != RelistStep.STAGED.encode():
                        return staged  # not pending any more
            else:
                return RelistIncompleteError(f"relist at {list_rv}: staging never held the list")
            if reply != RelistStep.SWEEPING.encode():
                return reply  # 0: obsolete, or not pending
            answer = yield from self._sweep(kind, scope, list_rv, ack)
            if answer is not None:
                return answer
        return RelistIncompleteError(f"relist at {list_rv}: its sweep's set kept losing members")

    def _sweep(
        self, kind: str, scope: str, list_rv: str, ack: Ack
    ) -> Generator[Batch, list[object], object]:
        """The sweep's calls (relist_scan.lua, relist_sweep.lua) once relist.lua said
        'sweeping'; answers the entry's answer, or None when the sweep's set lost
        members (relist_end stages the list again)."""
        k, s = self.keys, self.settings
        fields = fields_arg(kind)
        deleted, drifted = 0, False
        scan = _one(
            self.scan_script,
            RelistScanKeys(
                k.relist(kind, scope),
                k.index(kind),
                k.relist_sweep(kind, scope),
                k.index_records(kind),
            ),
            RelistScanArgs(list_rv, scope, fields, s.relist_scan_count),
        )
        sweep_keys = RelistSweepKeys(
            relist=k.relist(kind, scope),
            relist_members=k.relist_members(kind, scope),
            sweep=k.relist_sweep(kind, scope),
            kind_index=k.index(kind),
            counts=k.counts(kind),
            records=k.index_records(kind),
            changes=k.changes,
            stream=k.stream,
        )
        for _ in range(s.relist_max_sweep_calls):
            (found,) = yield scan
            assert isinstance(found, list), found
            status = found[0].decode()
            if status == RelistStep.LOST:
                return None
            if status == RelistStep.SCANNED and found[2] != b"0":
                continue  # the scan moved the cursor on itself
            cursor, next_cursor, candidates, records = "", "0", [], []
            if status != RelistStep.ENDED:
                cursor, next_cursor = found[1].decode(), found[2].decode()
            if status == RelistStep.FOUND:
                candidates = [m.decode() for m in found[3]]
                held = found[4]
                records = [None if v is None else v.decode() for v in held] or [None] * len(
                    candidates
                )
            # The candidates a few dozen a call (each delete is ~10 commands): all
            # but the last part leave the cursor where it is ("").
            step = s.relist_sweep_chunk
            for at in range(0, max(len(candidates), 1), step):
                last = at + step >= len(candidates)
                part, recorded = candidates[at : at + step], records[at : at + step]
                args = RelistSweepArgs(
                    list_rv=list_rv,
                    cursor=cursor,
                    next_cursor=next_cursor if last else "",
                    tombstone_ttl=s.tombstone_ttl_s,
                    changes_maxlen=s.changes_maxlen,
                    by_prefix=k.by_prefix(kind),
                    fields=fields,
                    mode=ack.mode,
                    group=ack.group,
                    entry_id=ack.entry_id,
                )
                touched = [
                    key for m in part for key in (k.state_of(kind, m), k.tombstone_of(kind, m))
                ]
                by_sets = dict.fromkeys(
                    b for v in recorded if v is not None for b in self.by_sets(kind, v)
                )
                (swept,) = yield _one(
                    self.sweep_script,
                    (*sweep_keys, *touched, *by_sets),
                    (
                        *args,
                        *part,
                        *(NOT_RECORDED if v is None else RECORDED + v for v in recorded),
                    ),
                )
                if swept in (RelistStep.MOVED.encode(), RelistStep.RETRY.encode()):
                    break  # scan again from where the cursor is
                if not isinstance(swept, list):
                    return swept  # not pending any more
                count, drift, ended = swept
                deleted, drifted = deleted + count, drifted or bool(drift)
                if ended:
                    return Outcome.INDEX_DRIFT.value.encode() if drifted else deleted
        return RelistIncompleteError(
            f"relist at {list_rv}: no end in {s.relist_max_sweep_calls} calls"
        )


def _one(script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Batch:
    batch = Batch()
    script.call(batch, keys, args)
    return batch


def drive(steps: Steps, send: Callable[[Batch], list[object]]) -> object:
    """Run steps to their answer, each Batch through send. An error reply ends the
    run and is its answer (what is sent again after it starts over, and resumes
    from what Redis recorded)."""
    try:
        batch = next(steps)
        while True:
            replies = send(batch)
            failed = next((r for r in replies if isinstance(r, redis.RedisError)), None)
            if failed is not None:
                return failed
            batch = steps.send(replies)
    except StopIteration as done:
        return done.value
    finally:
        steps.close()
