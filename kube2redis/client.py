"""Reading the mirror: a typed library for consumers (dashboards, schedulers).

    from kube2redis.client import Mirror, Query
    mirror = Mirror(redis.Redis.from_url(url))
    job = mirror.get("job", "team-a", "train-1")          # StoredObject | None
    running = mirror.objects(Query("job", phase="Running", queue="gpu"))
    for update in mirror.follow(Query("job", namespace="team-a")):
        ...                                                  # Snapshot, then Updates

`AsyncMirror` is the same over ``redis.asyncio``; `ShardedMirror` reads a mirror
split in shards (``--shards N``; common/shards.py says which shard holds what).
Objects come back as the bytes the API server sent (``StoredObject.raw``), decoded
only when asked (``.decode()``, msgspec). A key's existence is the truth: a member
listed by an index whose hash is gone was deleted meanwhile and is left out.

The change feed (`k8s:changes`) is capped, so a reader that falls behind can find
its position trimmed away: `changes()` then raises FeedGapError, as it does on a RESET
entry (the mirror was cleared), and the reader must list again; `follow()` does that
for its caller (a new Snapshot), so it never skips a change silently.
"""

import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeVar, cast

import msgspec
import redis
import redis.asyncio

from common.indexes import INDEXED, Field, Values, split_indexed, values_of
from common.keys import STATE_OBJECT, STATE_RV, STATE_UID, Keys
from common.objects import ObjectMeta, decode_head
from common.records import Change, ChangeType, change_from_fields
from common.shards import ShardMap

T = TypeVar("T")
CHUNK: Final = 1000  # HMGETs per pipelined round trip
FEED_BATCH: Final = 500
ORIGIN: Final = "0-0"  # the position before the feed's first entry
# When a read of the feed stops: a time.monotonic() deadline, a predicate (e.g. an
# Event's is_set) asked between reads, or never (None).
Until = float | Callable[[], bool] | None


class StoredObject(msgspec.Struct, frozen=True):
    """One mirrored object: where it is, its resourceVersion and uid, and its JSON."""

    kind: str
    namespace: str
    name: str
    rv: str
    uid: str
    raw: bytes

    @property
    def member(self) -> str:
        return Keys.member(self.namespace, self.name)

    def decode(self, type: type[T] = dict[str, Any]) -> T:  # type: ignore[assignment]
        """The object decoded (msgspec), as a dict or as any msgspec-decodable type."""
        return msgspec.json.decode(self.raw, type=type)

    @property
    def values(self) -> Values:
        """Its indexable fields (phase, queue)."""
        return values_of(self.raw)


class Query(msgspec.Struct, frozen=True):
    """Which objects: a kind, optionally one namespace, phase and queue. Phase and
    queue are read from the indexes (common/indexes.py says which kinds have them).
    An empty phase or queue is refused: objects without one are counted (counts()
    under "") but in no index set, so such a query could only answer nothing."""

    kind: str
    namespace: str | None = None
    phase: str | None = None
    queue: str | None = None

    def __post_init__(self) -> None:
        for field, value in ((Field.PHASE, self.phase), (Field.QUEUE, self.queue)):
            if value == "":
                raise ValueError(
                    f"{field} '' is not indexed (counts() counts such objects under ''): "
                    f"list the kind and filter on .values.{field}"
                )

    def index_sets(self, keys: Keys) -> list[str]:
        """The sets whose intersection holds the members (then filtered by namespace)."""
        wanted = {Field.PHASE: self.phase, Field.QUEUE: self.queue}
        sets = []
        for field, value in wanted.items():
            if value is None:
                continue
            if field not in INDEXED.get(self.kind, ()):
                raise ValueError(f"{self.kind} has no {field} index")
            sets.append(keys.by(self.kind, field, value))
        return sets or [keys.index(self.kind)]

    def in_namespace(self, member: str) -> bool:
        return self.namespace is None or Keys.namespace_of(member, True) == self.namespace

    def matches(self, obj: StoredObject) -> bool:
        """Does a stored object answer this query (what the indexes would say)?"""
        if obj.kind != self.kind or (
            self.namespace is not None and obj.namespace != self.namespace
        ):
            return False
        if self.phase is None and self.queue is None:
            return True
        values = obj.values
        return (self.phase is None or values.phase == self.phase) and (
            self.queue is None or values.queue == self.queue
        )


class FeedEntry(NamedTuple):
    """A change-feed entry and its id (the position to resume after)."""

    id: str
    change: Change


class FeedGapError(Exception):
    """The change feed cannot be followed from this position: it was trimmed past it,
    or the mirror was reset. List again (a new snapshot) and follow from there."""

    def __init__(self, position: str, reason: str) -> None:
        super().__init__(f"change feed position {position}: {reason}; list again")
        self.position, self.reason = position, reason


class Snapshot(msgspec.Struct):
    """The objects a query answers, and the feed position taken before they were read:
    following from it misses no change made after the read (it may repeat some)."""

    position: str
    objects: dict[str, StoredObject]


class Update(msgspec.Struct, frozen=True):
    """A change to the followed view: the object now (None: it left the view, deleted
    or no longer matching), and the feed entry that said so."""

    member: str
    obj: StoredObject | None
    entry: FeedEntry


# ---- the pure parts ------------------------------------------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def feed_gap(after: str, info: Mapping[str, Any] | None) -> str | None:
    """Why the feed cannot be followed after position `after` (None: it can), given
    XINFO STREAM read in the same transaction as the entries (None: no stream).
    Trimming only ever removes the oldest entries, so nothing after `after` was lost
    while the first entry held is not after it. Conservative: a position that was
    itself trimmed is a gap even if nothing after it went (that cannot be told)."""
    if info is None:
        return None if after == ORIGIN else "the change feed is gone (Redis lost it)"
    if parse_id(_text(info["last-generated-id"])) < parse_id(after):
        return "the change feed was recreated behind this position"
    if after == ORIGIN:
        trimmed = int(info["entries-added"]) > int(info["length"])
        return "the change feed was trimmed since its start" if trimmed else None
    first = info.get("first-entry")
    if first is None:  # emptied: anything added after our position is gone
        newer = parse_id(_text(info["last-generated-id"])) > parse_id(after)
        return "the change feed was trimmed past this position" if newer else None
    if parse_id(_text(first[0])) > parse_id(after):
        return "the change feed was trimmed past this position"
    return None


def stored_object(kind: str, member: str, held: Sequence[bytes | None]) -> StoredObject | None:
    """An HMGET object rv uid reply as a StoredObject (None: not stored). Namespace
    and name are the object's own (a member cannot tell a namespace from a
    cluster-scoped name with ':', such as "system:admin"); an object without them,
    which no API server sends, is named by its member."""
    raw, rv, uid = held
    if raw is None or rv is None:
        return None
    try:
        meta = decode_head(raw).metadata
    except (msgspec.DecodeError, msgspec.ValidationError):
        meta = ObjectMeta()
    if meta.name:
        namespace, name = meta.namespace, meta.name
    else:
        namespace, name = "", member
    return StoredObject(kind, namespace, name, rv.decode(), (uid or b"").decode(), raw)


def feed_entries(reply: Any) -> list[FeedEntry]:
    """An XREAD reply of the change feed as entries."""
    if not reply:
        return []
    ((_, entries),) = reply
    return [FeedEntry(_text(i), change_from_fields(fields)) for i, fields in entries]


def member_of(keys: Keys, kind: str, change_key: str) -> str | None:
    """The member a change-feed key names, if it is of this kind."""
    head = keys.state_of(kind, "")
    return change_key[len(head) :] if change_key.startswith(head) else None


def counts_of(kind: str, held: Mapping[bytes, bytes]) -> dict[Values, int]:
    """A counter hash as (phase, queue) -> how many."""
    out: dict[Values, int] = {}
    for joined, n in held.items():
        values = split_indexed(kind, joined.decode())
        key = Values(phase=values.get(Field.PHASE, ""), queue=values.get(Field.QUEUE, ""))
        out[key] = out.get(key, 0) + int(n)
    return out


_FIELDS: Final = (STATE_OBJECT, STATE_RV, STATE_UID)


class _Follow:
    """What follow() keeps between reads: the view and which changes touch it."""

    def __init__(self, keys: Keys, query: Query, snapshot: Snapshot) -> None:
        self.keys, self.query = keys, query
        self.view = dict(snapshot.objects)
        self.position = snapshot.position

    def wanted(self, entries: list[FeedEntry]) -> list[tuple[str, FeedEntry]]:
        """The entries of our kind in our namespace, with their members; a RESET raises."""
        out = []
        for entry in entries:
            self.position = entry.id
            if entry.change.type == ChangeType.RESET:
                raise FeedGapError(entry.id, "the mirror was reset")
            member = member_of(self.keys, self.query.kind, entry.change.key)
            if member is not None and self.query.in_namespace(member):
                out.append((member, entry))
        return out

    def updates(
        self, wanted: list[tuple[str, FeedEntry]], now: list[StoredObject | None]
    ) -> Iterator[Update]:
        """The view's changes, given each member's object as read after its entry."""
        for (member, entry), obj in zip(wanted, now, strict=True):
            held = self.view.get(member)
            current = obj if obj is not None and self.query.matches(obj) else None
            if current is None:
                if held is not None:
                    del self.view[member]
                    yield Update(member, None, entry)
            elif held is None or held.rv != current.rv:
                self.view[member] = current
                yield Update(member, current, entry)


# ---- sync ----------------------------------------------------------------------------------


class Mirror:
    """Reads of the mirror over a redis-py client (``decode_responses`` off)."""

    def __init__(self, r: "redis.Redis", keys: Keys | None = None) -> None:
        self.r, self.keys = r, keys or Keys()

    def get(self, kind: str, namespace: str, name: str) -> StoredObject | None:
        """One object, or None if it is not stored (one HMGET)."""
        held = self.r.hmget(self.keys.state(kind, namespace, name), _FIELDS)
        return stored_object(kind, Keys.member(namespace, name), cast(list[bytes | None], held))

    def members(self, query: Query) -> list[str]:
        """The members a query answers, from the indexes alone."""
        sets = query.index_sets(self.keys)
        found = cast(set[bytes], self.r.sinter(sets) if len(sets) > 1 else self.r.smembers(sets[0]))
        return sorted(m for m in (b.decode() for b in found) if query.in_namespace(m))

    def fetch(self, kind: str, members: Iterable[str]) -> list[StoredObject | None]:
        """The objects of members, in order (None: deleted), CHUNK per round trip."""
        members = list(members)
        out: list[StoredObject | None] = []
        for i in range(0, len(members), CHUNK):
            chunk = members[i : i + CHUNK]
            pipe = self.r.pipeline(transaction=False)
            for member in chunk:
                pipe.hmget(self.keys.state_of(kind, member), _FIELDS)
            out += [stored_object(kind, m, h) for m, h in zip(chunk, pipe.execute(), strict=True)]
        return out

    def objects(self, query: Query) -> list[StoredObject]:
        """The stored objects a query answers, sorted by namespace and name."""
        return [o for o in self.fetch(query.kind, self.members(query)) if o is not None]

    def counts(self, kind: str) -> dict[Values, int]:
        """How many objects of a kind per (phase, queue): one HGETALL."""
        return counts_of(kind, cast(dict[bytes, bytes], self.r.hgetall(self.keys.counts(kind))))

    def position(self) -> str:
        """The change feed's newest id: follow from here for what comes next."""
        try:
            info = self.r.xinfo_stream(self.keys.changes)
        except redis.ResponseError:
            return ORIGIN
        return _text(info["last-generated-id"])

    def snapshot(self, query: Query) -> Snapshot:
        """The objects a query answers, with the feed position taken before reading them."""
        position = self.position()
        return Snapshot(position, {o.member: o for o in self.objects(query)})

    def batches(
        self, after: str, block_ms: int = 5000, until: Until = None
    ) -> Iterator[list[FeedEntry]]:
        """Change-feed entries after position `after`, as read (up to FEED_BATCH per
        read), waiting for more (block_ms at a time) until `until` says stop.
        Raises FeedGapError when the feed was trimmed past the position, or at a RESET
        entry (the mirror was cleared): list again."""
        while not _over(until):
            pipe = self.r.pipeline(transaction=True)
            pipe.xinfo_stream(self.keys.changes)
            pipe.xread({self.keys.changes: after}, count=FEED_BATCH)
            info, reply = pipe.execute(raise_on_error=False)
            entries, after = checked(after, info, reply)
            if entries:
                yield entries
                continue
            # Nothing new: wait for an entry, then read it in the transaction again.
            if (wait := _wait_ms(block_ms, until)) > 0:
                self.r.xread({self.keys.changes: after}, count=1, block=wait)

    def changes(self, after: str, block_ms: int = 5000, until: Until = None) -> Iterator[FeedEntry]:
        """The entries of batches(), one by one."""
        for entries in self.batches(after, block_ms, until):
            yield from entries

    def follow(
        self, query: Query, block_ms: int = 5000, until: Until = None
    ) -> Iterator[Snapshot | Update]:
        """Snapshot-then-follow: a Snapshot, then an Update for every change to the
        objects the query answers, until `until`. When the feed cannot be followed
        (FeedGapError) it lists again and yields a new Snapshot: nothing is skipped."""
        while not _over(until):
            state = _Follow(self.keys, query, self.snapshot(query))
            yield Snapshot(state.position, dict(state.view))
            try:
                for entries in self.batches(state.position, block_ms, until):
                    wanted = state.wanted(entries)
                    now = self.fetch(query.kind, [member for member, _ in wanted])
                    yield from state.updates(wanted, now)
            except FeedGapError:
                continue
            return


def checked(after: str, info: Any, reply: Any) -> tuple[list[FeedEntry], str]:
    """A transaction's XINFO STREAM and XREAD of the feed after `after`: the entries
    before any RESET and the new position; FeedGapError when they cannot be trusted."""
    info = None if isinstance(info, redis.ResponseError) else info
    if (reason := feed_gap(after, info)) is not None:
        raise FeedGapError(after, reason)
    entries = feed_entries(reply)
    for n, entry in enumerate(entries):
        if entry.change.type == ChangeType.RESET:
            if n:  # hand over what came before; the RESET is met again next read
                return entries[:n], entries[n - 1].id
            raise FeedGapError(entry.id, "the mirror was reset")
    return entries, entries[-1].id if entries else after


def _over(until: Until) -> bool:
    if until is None:
        return False
    if callable(until):
        return until()
    return time.monotonic() >= until


def _wait_ms(block_ms: int, until: Until) -> int:
    """How long a read may block: block_ms, or less if the deadline is nearer."""
    if isinstance(until, float | int):
        return min(block_ms, int((until - time.monotonic()) * 1000))
    return block_ms


class ShardedMirror:
    """Reads of a mirror split in shards (``--shards N``): one Mirror per shard,
    each over a client for its keys (on a Redis Cluster a RedisCluster client routes
    each shard's keys to its slot). A get is one call to the namespace's shard; a list
    or a count asks every shard (or the one shard of a namespace) and merges. Each
    shard has its own change feed: follow them with a Mirror per shard."""

    def __init__(self, shards: ShardMap, mirrors: Sequence[Mirror]) -> None:
        if len(mirrors) != shards.count:
            raise ValueError(f"{shards.count} shards need as many Mirrors, not {len(mirrors)}")
        self.shards, self.mirrors = shards, list(mirrors)

    @classmethod
    def over(cls, r: "redis.Redis", shards: ShardMap) -> "ShardedMirror":
        """Every shard read through one client (a single Redis, or a RedisCluster)."""
        return cls(shards, [Mirror(r, shards.keys(s)) for s in shards.all])

    def mirror_of(self, namespace: str) -> Mirror:
        """The Mirror of the shard holding a namespace's objects."""
        return self.mirrors[self.shards.shard_of(namespace)]

    def get(self, kind: str, namespace: str, name: str) -> StoredObject | None:
        return self.mirror_of(namespace).get(kind, namespace, name)

    def objects(self, query: Query) -> list[StoredObject]:
        """The stored objects a query answers, sorted by namespace and name."""
        if query.namespace is not None:
            return self.mirror_of(query.namespace).objects(query)
        found = [o for m in self.mirrors for o in m.objects(query)]
        return sorted(found, key=lambda o: (o.namespace, o.name))

    def counts(self, kind: str) -> dict[Values, int]:
        """How many objects of a kind per (phase, queue), summed over the shards."""
        total: dict[Values, int] = {}
        for m in self.mirrors:
            for values, n in m.counts(kind).items():
                total[values] = total.get(values, 0) + n
        return total


# ---- asyncio -------------------------------------------------------------------------------


class AsyncMirror:
    """Mirror's reads over ``redis.asyncio`` (``decode_responses`` off)."""

    def __init__(self, r: "redis.asyncio.Redis", keys: Keys | None = None) -> None:
        self.r, self.keys = r, keys or Keys()

    async def get(self, kind: str, namespace: str, name: str) -> StoredObject | None:
        """One object, or None if it is not stored (one HMGET)."""
        held = await self.r.hmget(self.keys.state(kind, namespace, name), _FIELDS)
        return stored_object(kind, Keys.member(namespace, name), cast(list[bytes | None], held))

    async def members(self, query: Query) -> list[str]:
        """The members a query answers, from the indexes alone."""
        sets = query.index_sets(self.keys)
        found = cast(
            set[bytes],
            await (self.r.sinter(sets) if len(sets) > 1 else self.r.smembers(sets[0])),
        )
        return sorted(m for m in (b.decode() for b in found) if query.in_namespace(m))

    async def fetch(self, kind: str, members: Iterable[str]) -> list[StoredObject | None]:
        """The objects of members, in order (None: deleted), CHUNK per round trip."""
        members = list(members)
        out: list[StoredObject | None] = []
        for i in range(0, len(members), CHUNK):
            chunk = members[i : i + CHUNK]
            pipe = self.r.pipeline(transaction=False)
            for member in chunk:
                pipe.hmget(self.keys.state_of(kind, member), _FIELDS)
            held = await pipe.execute()
            out += [stored_object(kind, m, h) for m, h in zip(chunk, held, strict=True)]
        return out

    async def objects(self, query: Query) -> list[StoredObject]:
        """The stored objects a query answers, sorted by namespace and name."""
        return [o for o in await self.fetch(query.kind, await self.members(query)) if o]

    async def counts(self, kind: str) -> dict[Values, int]:
        """How many objects of a kind per (phase, queue): one HGETALL."""
        held = await self.r.hgetall(self.keys.counts(kind))
        return counts_of(kind, cast(dict[bytes, bytes], held))

    async def position(self) -> str:
        """The change feed's newest id: follow from here for what comes next."""
        try:
            info = await self.r.xinfo_stream(self.keys.changes)
        except redis.ResponseError:
            return ORIGIN
        return _text(info["last-generated-id"])

    async def snapshot(self, query: Query) -> Snapshot:
        """The objects a query answers, with the feed position taken before reading them."""
        position = await self.position()
        return Snapshot(position, {o.member: o for o in await self.objects(query)})

    async def batches(
        self, after: str, block_ms: int = 5000, until: Until = None
    ) -> AsyncIterator[list[FeedEntry]]:
        """As Mirror.batches."""
        while not _over(until):
            pipe = self.r.pipeline(transaction=True)
            pipe.xinfo_stream(self.keys.changes)
            pipe.xread({self.keys.changes: after}, count=FEED_BATCH)
            info, reply = await pipe.execute(raise_on_error=False)
            entries, after = checked(after, info, reply)
            if entries:
                yield entries
                continue
            if (wait := _wait_ms(block_ms, until)) > 0:
                await self.r.xread({self.keys.changes: after}, count=1, block=wait)

    async def changes(
        self, after: str, block_ms: int = 5000, until: Until = None
    ) -> AsyncIterator[FeedEntry]:
        """The entries of batches(), one by one."""
        async for entries in self.batches(after, block_ms, until):
            for entry in entries:
                yield entry

    async def follow(
        self, query: Query, block_ms: int = 5000, until: Until = None
    ) -> AsyncIterator[Snapshot | Update]:
        """As Mirror.follow."""
        while not _over(until):
            state = _Follow(self.keys, query, await self.snapshot(query))
            yield Snapshot(state.position, dict(state.view))
            try:
                async for entries in self.batches(state.position, block_ms, until):
                    wanted = state.wanted(entries)
                    now = await self.fetch(query.kind, [member for member, _ in wanted])
                    for update in state.updates(wanted, now):
                        yield update
            except FeedGapError:
                continue
            return
