"""The stream entry contract: what a watcher appends and a projector reads.

Encoding to and decoding from Redis stream fields lives here and only here.
"""

from typing import Final

import msgspec

from common import rv as rvs

ADDED: Final = "ADDED"
MODIFIED: Final = "MODIFIED"
DELETED: Final = "DELETED"
# An object seen in a relist (a LIST, not a watch): applied like ADDED/MODIFIED.
SYNC: Final = "SYNC"
RELIST_BEGIN: Final = "RELIST_BEGIN"
RELIST_END: Final = "RELIST_END"

OBJECT_TYPES: Final = frozenset({ADDED, MODIFIED, DELETED, SYNC})
MARKER_TYPES: Final = frozenset({RELIST_BEGIN, RELIST_END})


class MalformedEntryError(ValueError):
    """A stream entry that does not follow the contract; the reason says why."""


class StreamEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One watch event, or a relist marker, as it travels through the stream.

    For markers ``rv`` is the list's resourceVersion, ``namespace`` the scope of
    the relist ("" for all namespaces) and, on RELIST_END, ``members`` the JSON
    array of index members the list returned.
    """

    type: str
    resource: str
    kind: str
    namespace: str
    name: str = ""
    uid: str = ""
    rv: str
    object: bytes = b""
    received_ns: int
    members: bytes = b""

    @property
    def is_marker(self) -> bool:
        return self.type in MARKER_TYPES


_FIELDS: Final = ("type", "resource", "kind", "namespace", "name", "uid", "rv", "object")
_REQUIRED: Final = ("type", "resource", "kind", "rv", "received_ns")


def to_fields(event: StreamEvent) -> dict[str, bytes | str | int]:
    """Stream fields of an event (empty optional fields left out)."""
    fields: dict[str, bytes | str | int] = {
        "type": event.type,
        "resource": event.resource,
        "kind": event.kind,
        "namespace": event.namespace,
        "rv": event.rv,
        "received_ns": event.received_ns,
    }
    if event.name:
        fields["name"] = event.name
    if event.uid:
        fields["uid"] = event.uid
    if event.object:
        fields["object"] = event.object
    if event.members:
        fields["members"] = event.members
    return fields


def from_fields(fields: dict[bytes, bytes]) -> StreamEvent:
    """Decode stream fields; raise MalformedEntryError with the reason."""
    if not fields:
        raise MalformedEntryError("entry has no fields (trimmed while pending?)")
    missing = [f for f in _REQUIRED if f.encode() not in fields]
    if missing:
        raise MalformedEntryError(f"missing field(s): {', '.join(missing)}")
    try:
        text = {f: fields.get(f.encode(), b"").decode() for f in _FIELDS if f != "object"}
        received_ns = int(fields[b"received_ns"])
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedEntryError(f"undecodable field: {exc}") from exc
    kind = text["type"]
    if kind not in OBJECT_TYPES and kind not in MARKER_TYPES:
        raise MalformedEntryError(f"unknown event type {kind!r}")
    if kind in OBJECT_TYPES and not text["name"]:
        raise MalformedEntryError("object event without a name")
    if kind in OBJECT_TYPES and kind != DELETED and not fields.get(b"object"):
        raise MalformedEntryError("object event without an object")
    try:
        rvs.validate(text["rv"])
    except rvs.InvalidResourceVersionError as exc:
        raise MalformedEntryError(str(exc)) from exc
    return StreamEvent(
        type=kind,
        resource=text["resource"],
        kind=text["kind"],
        namespace=text["namespace"],
        name=text["name"],
        uid=text["uid"],
        rv=text["rv"],
        object=fields.get(b"object", b""),
        received_ns=received_ns,
        members=fields.get(b"members", b""),
    )


_members_encoder = msgspec.json.Encoder()
_members_decoder = msgspec.json.Decoder(list[str])


def encode_members(members: list[str]) -> bytes:
    """RELIST_END members field."""
    return _members_encoder.encode(members)


def decode_members(raw: bytes) -> list[str]:
    """Inverse of encode_members; raises MalformedEntryError."""
    try:
        return _members_decoder.decode(raw) if raw else []
    except msgspec.DecodeError as exc:
        raise MalformedEntryError(f"RELIST_END members are not a JSON list: {exc}") from exc
