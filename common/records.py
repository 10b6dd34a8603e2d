"""The small records processes hand each other through Redis, declared once.

The stream entry (common/events.py) and the resync request (common/resync.py)
have modules of their own; these are the rest: what the projector's scripts
answer, what the change feed and the dead-letter stream hold, and what a watcher
publishes about itself. apply.lua and relist.lua write the change-feed fields
and return the outcome names; tests/unit/test_contracts.py holds them to it.
"""

import enum
from collections.abc import Mapping
from typing import Final

import msgspec


class Outcome(enum.StrEnum):
    """What applying one stream entry did (the projector's results metric label)."""

    APPLIED = "applied"  # state written (or deleted) and a change recorded
    TOMBSTONE = "tombstone"  # a delete of what was not held: only the tombstone
    STALE = "stale"  # not newer than the state held
    TOMBSTONED = "tombstoned"  # not newer than the object's delete
    RELISTED = "relisted"  # older than a relist that did not list the object
    NOT_PENDING = "not-pending"  # no longer pending in the group (applied, or reset)
    RELIST = "relist"  # a RELIST_END applied (relist.lua answers a count)
    # The same version again (a relist's SYNC) whose index record differed from its
    # values (stored before indexes existed, or drifted): re-indexed, a change recorded.
    REINDEXED = "reindexed"
    # Applied, but a counter it moved went below zero: the indexes had drifted
    # (counters lost, a partial write); kept negative for verify to report.
    INDEX_DRIFT = "index-drift"


class ChangeType(enum.StrEnum):
    """A change-feed entry's type: a watch event type, SYNC, or RESET."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    # A relist listed it: written as listed, or re-indexed at the version held.
    SYNC = "SYNC"
    # The mirror was cleared or Redis forgot (the feed with it): read afresh.
    RESET = "RESET"


class Change(msgspec.Struct, frozen=True):
    """One change-feed entry (`k8s:changes`): the state key that changed, how, at
    which resourceVersion, and the object's phase after it ("" if none)."""

    key: str
    type: ChangeType
    rv: str
    phase: str = ""


CHANGE_FIELDS: Final = tuple(field.name for field in msgspec.structs.fields(Change))
RESET_CHANGE: Final = Change(key="", type=ChangeType.RESET, rv="", phase="")


def change_fields(change: Change) -> dict[str, str]:
    """A change as the fields of its stream entry."""
    return {name: str(getattr(change, name)) for name in CHANGE_FIELDS}


def change_from_fields(fields: Mapping[bytes, bytes]) -> Change:
    """A change-feed entry read back; raises ValueError on an unknown type."""
    values = {name: fields.get(name.encode(), b"").decode() for name in CHANGE_FIELDS}
    return Change(
        key=values["key"], type=ChangeType(values["type"]), rv=values["rv"], phase=values["phase"]
    )


class DeadReason(enum.StrEnum):
    """Why an entry was dead-lettered: the metric's label (a fixed set); the note's
    text says the details."""

    MALFORMED = "malformed"  # the entry does not decode as a stream event
    APPLY_FAILED = "apply-failed"  # Redis answered its apply with an error of its own
    POISON = "poison"  # delivered max-deliveries times without being acked


class DeadLetterNote(msgspec.Struct, frozen=True):
    """What the projector adds to a dead-lettered entry's own fields: why, its id
    in the event stream, and the group that gave up on it ("" for a replay)."""

    dead_reason: str
    dead_id: str
    dead_group: str


DEAD_LETTER_FIELDS: Final = tuple(f.name for f in msgspec.structs.fields(DeadLetterNote))


def dead_letter_fields(
    fields: Mapping[str | bytes, str | bytes], note: DeadLetterNote
) -> dict[str | bytes, str | bytes]:
    """The dead-letter entry: the original entry's fields as read, then the note."""
    return {**fields, **{name: str(getattr(note, name)) for name in DEAD_LETTER_FIELDS}}


class WatcherStatus(msgspec.Struct, frozen=True):
    """What each watcher publishes about itself every few seconds (hash
    `k8s:watchers`, field = watcher id), for `kube2redis status`."""

    pid: int
    spool_bytes: int
    spool_records: int
    spool_dir: str
    last_event_ns: int
    updated_ns: int
    health: str = ""


_status_decoder: Final = msgspec.json.Decoder(WatcherStatus)


def encode_watcher_status(status: WatcherStatus) -> bytes:
    return msgspec.json.encode(status)


def decode_watcher_status(raw: bytes | str) -> WatcherStatus:
    """Raises msgspec.ValidationError / DecodeError for what is not one."""
    return _status_decoder.decode(raw)
