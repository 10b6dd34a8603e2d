"""Calls of the two Lua scripts, with their KEYS and ARGV laid out in one place.

Calls are EVALSHA commands added to a hand-packed batch (common/resp.py); a
NOSCRIPT reply (Redis restarted or its script cache flushed) is answered by
load() and a resend of the same calls.
"""

import hashlib
import os
from pathlib import Path

import msgspec
import redis
from redis.exceptions import NoScriptError

from common.events import StreamEvent, decode_members
from common.keys import Keys
from common.objects import phase_of
from common.resp import Arg, Batch

# Set only by the chaos run that shows its checker catches a broken projector
# (chaos/world.py): apply.lua without its resourceVersion compare.
BREAK_CAS_ENV = "KUBE2REDIS_CHAOS_BREAK_CAS"


class ApplySettings(msgspec.Struct, frozen=True):
    tombstone_ttl_s: int = 7 * 24 * 3600  # must outlive stream retention
    changes_maxlen: int = 100_000


class Script(msgspec.Struct, frozen=True):
    source: bytes
    sha: bytes

    @classmethod
    def read(cls, name: str) -> "Script":
        source = Path(__file__).with_name(name).read_bytes()
        return cls(source, hashlib.sha1(source, usedforsecurity=False).hexdigest().encode())

    def without_cas(self) -> "Script":
        """This script with its stored-version check taken out (see BREAK_CAS_ENV)."""
        source = self.source.replace(b"if stored then", b"if false then", 1)
        assert source != self.source, "apply.lua changed: the chaos switch needs updating"
        return Script(source, hashlib.sha1(source, usedforsecurity=False).hexdigest().encode())

    def call(self, batch: Batch, keys: list[str], args: list[Arg]) -> None:
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

    def apply(self, batch: Batch, event: StreamEvent, group: str, entry_id: str) -> None:
        """Add the change an object event makes (and the entry's XACK) to batch."""
        k = self.keys
        member = k.member(event.namespace, event.name)
        keys = [
            k.state(event.kind, event.namespace, event.name),
            k.index(event.kind),
            k.tombstone(event.kind, event.namespace, event.name),
            k.changes,
            k.relist(event.kind, event.namespace),
            k.relist_members(event.kind, event.namespace),
            k.relist(event.kind, ""),
            k.relist_members(event.kind, ""),
            k.stream,
        ]
        args: list[Arg] = [
            event.type,
            event.rv,
            event.object,
            member,
            self.settings.tombstone_ttl_s,
            phase_of(event.object) if event.object else "",
            self.settings.changes_maxlen,
            event.uid,
            group,
            entry_id,
        ]
        self.apply_script.call(batch, keys, args)

    def relist_end(self, batch: Batch, event: StreamEvent, group: str, entry_id: str) -> None:
        """Add a RELIST_END: record the listed members and sweep what vanished."""
        k = self.keys
        keys = [
            k.index(event.kind),
            k.relist(event.kind, event.namespace),
            k.relist_members(event.kind, event.namespace),
            k.changes,
            k.stream,
        ]
        args: list[Arg] = [
            event.rv,
            event.namespace,
            k.state(event.kind, "", ""),
            k.tombstone(event.kind, "", ""),
            self.settings.tombstone_ttl_s,
            self.settings.changes_maxlen,
            group,
            entry_id,
            1 if event.purge else 0,
            *decode_members(event.members),
        ]
        self.relist_script.call(batch, keys, args)
