"""Calls of the two Lua scripts, with their KEYS and ARGV laid out in one place.

Calls are EVALSHA commands added to a hand-packed batch (common/resp.py); a
NOSCRIPT reply (Redis restarted or its script cache flushed) is answered by
load() and a resend of the same calls. Each script is lua/shared.lua put in
front of the script's own text, so the rules they share are written once.
"""

import enum
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec
import redis
from redis.exceptions import NoScriptError

from common.events import StreamEvent, decode_members
from common.indexes import Values, fields_arg, indexed_arg, values_of
from common.keys import Keys
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
    """apply.lua's KEYS, in its order."""

    state: str
    kind_index: str
    counts: str
    records: str
    tombstone: str
    changes: str
    relist_ns: str
    relist_ns_members: str
    relist_all: str
    relist_all_members: str
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


class RelistKeys(NamedTuple):
    """relist.lua's KEYS, in its order."""

    kind_index: str
    counts: str
    records: str
    relist: str
    relist_members: str
    changes: str
    stream: str


class RelistArgs(NamedTuple):
    """relist.lua's named ARGV, in its order; the listed members follow them."""

    list_rv: str
    scope: str
    state_prefix: str
    tombstone_prefix: str
    tombstone_ttl: int
    changes_maxlen: int
    by_prefix: str
    fields: str
    mode: str
    group: str
    entry_id: str
    purge: str


class ApplySettings(msgspec.Struct, frozen=True):
    tombstone_ttl_s: int = 7 * 24 * 3600  # must outlive stream retention
    changes_maxlen: int = 100_000


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
        self.relist_script = Script.read("relist.lua")

    def load(self, r: "redis.Redis") -> None:
        """Put both scripts in Redis's script cache."""
        for script in (self.apply_script, self.relist_script):
            r.script_load(script.source)

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
            relist_all=k.relist(event.kind, ""),
            relist_all_members=k.relist_members(event.kind, ""),
            stream=k.stream,
        )
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
            indexed=indexed_arg(event.kind, values),
            mode=ack.mode,
            group=ack.group,
            entry_id=ack.entry_id,
        )
        self.apply_script.call(batch, keys, args)

    def relist_end(self, batch: Batch, event: StreamEvent, ack: Ack) -> None:
        """Add a RELIST_END: record the listed members and sweep what vanished."""
        k = self.keys
        keys = RelistKeys(
            kind_index=k.index(event.kind),
            counts=k.counts(event.kind),
            records=k.index_records(event.kind),
            relist=k.relist(event.kind, event.namespace),
            relist_members=k.relist_members(event.kind, event.namespace),
            changes=k.changes,
            stream=k.stream,
        )
        args = RelistArgs(
            list_rv=event.rv,
            scope=event.namespace,
            state_prefix=k.state(event.kind, "", ""),
            tombstone_prefix=k.tombstone(event.kind, "", ""),
            tombstone_ttl=self.settings.tombstone_ttl_s,
            changes_maxlen=self.settings.changes_maxlen,
            by_prefix=k.by_prefix(event.kind),
            fields=fields_arg(event.kind),
            mode=ack.mode,
            group=ack.group,
            entry_id=ack.entry_id,
            purge="1" if event.purge else "",
        )
        self.relist_script.call(batch, keys, (*args, *decode_members(event.members)))
