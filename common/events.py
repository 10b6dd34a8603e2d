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
    array of index members the list returned. ``purge`` marks the RELIST_END of a
    resource that is no longer served: its objects leave, and no tombstone or
    relist record stays behind to reject them if the resource comes back.
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
    purge: bool = False

    @property
    def is_marker(self) -> bool:
        return self.type in MARKER_TYPES


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
    if event.purge:
        fields["purge"] = 1
    return fields


def from_fields(fields: dict[bytes, bytes]) -> StreamEvent:
    """Decode stream fields; raise MalformedEntryError with the reason."""
    if not fields:
        raise MalformedEntryError("entry has no fields (trimmed while pending?)")
    # Hot path (every entry of every replay): names as bytes constants, no loops.
    get = fields.get
    raw_type, raw_rv, raw_received = get(b"type"), get(b"rv"), get(b"received_ns")
    raw_resource, raw_kind = get(b"resource"), get(b"kind")
    if (
        raw_type is None
        or raw_rv is None
        or raw_received is None
        or raw_resource is None
        or raw_kind is None
    ):
        missing = [name for name in _REQUIRED if name.encode() not in fields]
        raise MalformedEntryError(f"missing field(s): {', '.join(missing)}")
    obj = get(b"object", b"")
    try:
        kind = raw_type.decode()
        rv = raw_rv.decode()
        name = get(b"name", b"").decode()
        event = StreamEvent(
            type=kind,
            resource=raw_resource.decode(),
            kind=raw_kind.decode(),
            namespace=get(b"namespace", b"").decode(),
            name=name,
            uid=get(b"uid", b"").decode(),
            rv=rv,
            object=obj,
            received_ns=int(raw_received),
            members=get(b"members", b""),
            purge=get(b"purge") == b"1",
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedEntryError(f"undecodable field: {exc}") from exc
    if kind not in OBJECT_TYPES and kind not in MARKER_TYPES:
        raise MalformedEntryError(f"unknown event type {kind!r}")
    if kind in OBJECT_TYPES and not name:
        raise MalformedEntryError("object event without a name")
    if kind in OBJECT_TYPES and kind != DELETED and not obj:
        raise MalformedEntryError("object event without an object")
    try:
        rvs.validate(rv)
    except rvs.InvalidResourceVersionError as exc:
        raise MalformedEntryError(str(exc)) from exc
    return event


Entry = tuple[bytes, dict[bytes, bytes]]


def entries_from_read_reply(reply: object) -> list[Entry]:
    """Entries of a raw XREAD/XREADGROUP reply on one stream: a map {stream: entries}
    in RESP3 (redis-py 8's default), [[stream, entries]] in RESP2, nil when BLOCK
    ran out."""
    if isinstance(reply, dict):
        return entries_from_reply(next(iter(reply.values()), None))
    if isinstance(reply, list) and reply:
        return entries_from_reply(reply[0][1])
    return []


def entries_from_reply(rows: object) -> list[Entry]:
    """Entries of a raw XRANGE reply (or of one stream in an XREADGROUP reply):
    ``[[id, [field, value, ...]], ...]``. A pending entry trimmed from the stream
    comes back with no fields (nil): it gets an empty dict."""
    if not isinstance(rows, list):
        return []
    out: list[Entry] = []
    for entry_id, flat in rows:
        pairs = iter(flat or ())
        out.append((entry_id, dict(zip(pairs, pairs, strict=False))))
    return out


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
