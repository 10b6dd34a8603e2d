"""Calls of the two Lua scripts, with their KEYS and ARGV laid out in one place.

redis-py's Script objects run EVALSHA and reload the script on NOSCRIPT, also
inside pipelines.
"""

from pathlib import Path
from typing import Any

import msgspec
import redis
from redis.commands.core import Script

from common.events import StreamEvent, decode_members
from common.keys import Keys
from common.objects import phase_of


class ApplySettings(msgspec.Struct, frozen=True):
    tombstone_ttl_s: int = 7 * 24 * 3600  # must outlive stream retention
    changes_maxlen: int = 100_000


def _load(name: str) -> str:
    return Path(__file__).with_name(name).read_text()


class Scripts:
    """The apply and relist scripts bound to one client and key layout."""

    def __init__(self, r: "redis.Redis", keys: Keys, settings: ApplySettings) -> None:
        self.keys, self.settings = keys, settings
        self.apply_script: Script = r.register_script(_load("apply.lua"))
        self.relist_script: Script = r.register_script(_load("relist.lua"))

    def apply(self, pipe: Any, event: StreamEvent, group: str, entry_id: str) -> None:
        """Queue the change an object event makes (and the entry's XACK) on pipe."""
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
        args: list[str | bytes | int] = [
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
        self.apply_script(keys=keys, args=args, client=pipe)

    def relist_end(self, pipe: Any, event: StreamEvent, group: str, entry_id: str) -> None:
        """Queue a RELIST_END: record the listed members and sweep what vanished."""
        k = self.keys
        keys = [
            k.index(event.kind),
            k.relist(event.kind, event.namespace),
            k.relist_members(event.kind, event.namespace),
            k.changes,
            k.stream,
        ]
        args: list[str | int] = [
            event.rv,
            event.namespace,
            k.state(event.kind, "", ""),
            k.tombstone(event.kind, "", ""),
            self.settings.tombstone_ttl_s,
            self.settings.changes_maxlen,
            group,
            entry_id,
            *decode_members(event.members),
        ]
        self.relist_script(keys=keys, args=args, client=pipe)
