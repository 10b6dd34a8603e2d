"""The reader library (kube2redis/client.py) against a real redis-server, with the
state written by the real apply and relist scripts."""

import asyncio
import json
import time

import pytest
import redis
import redis.asyncio

from common import events as ev
from common import mirror
from common.indexes import Values
from common.keys import Keys
from common.records import ChangeType
from common.shards import ShardMap
from kube2redis.client import (
    AsyncMirror,
    FeedEntry,
    FeedGapError,
    Mirror,
    Query,
    ShardedMirror,
    Snapshot,
    Update,
)
from tests.integration.test_indexes import _event
from tests.support.apply import apply_events
from tests.support.events import job_event, relist_end

KEYS = Keys()


def _jobs(r: "redis.Redis") -> None:
    apply_events(
        r,
        [
            _event(ev.ADDED, "a", "10", "Running"),
            _event(ev.ADDED, "b", "11", "Running", "gpu"),
            _event(ev.ADDED, "c", "12", "Pending", "gpu"),
        ],
    )


def test_get_lists_and_counts_read_what_apply_wrote(r: "redis.Redis") -> None:
    _jobs(r)
    m = Mirror(r)
    a = m.get("job", "ns", "a")
    assert a is not None and a.rv == "10" and a.uid == "uid-a" and a.namespace == "ns"
    assert a.decode()["metadata"]["name"] == "a"
    assert a.values == Values(phase="Running", queue="default")
    assert m.get("job", "ns", "nope") is None
    names = [o.name for o in m.objects(Query("job"))]
    assert names == ["a", "b", "c"]
    assert [o.name for o in m.objects(Query("job", phase="Running"))] == ["a", "b"]
    assert [o.name for o in m.objects(Query("job", phase="Running", queue="gpu"))] == ["b"]
    assert m.objects(Query("job", namespace="other")) == []
    assert m.counts("job") == {
        Values("Running", "default"): 1,
        Values("Running", "gpu"): 1,
        Values("Pending", "gpu"): 1,
    }
    with pytest.raises(ValueError, match="no queue index"):
        m.members(Query("pod", queue="gpu"))


def test_changes_follow_the_feed_and_say_when_it_was_trimmed_past(r: "redis.Redis") -> None:
    m = Mirror(r)
    start = m.position()
    _jobs(r)
    seen = list(m.changes(start, block_ms=50, until=time.monotonic() + 0.5))
    assert [e.change.key for e in seen] == [KEYS.state("job", "ns", n) for n in "abc"]
    assert seen[0].change.phase == "Running" and seen[0].change.type == ChangeType.ADDED
    # The feed is capped: trimmed past our position, it cannot be followed from there.
    apply_events(r, [_event(ev.MODIFIED, "a", "13", "Completed")])
    r.xtrim(KEYS.changes, maxlen=1, approximate=False)
    with pytest.raises(FeedGapError, match="trimmed past"):
        list(m.changes(seen[0].id, block_ms=50, until=time.monotonic() + 0.5))
    # Conservative: a position itself trimmed away is a gap, even if nothing after it
    # was lost (it cannot be told apart); from an entry still held, none.
    with pytest.raises(FeedGapError):
        list(m.changes(seen[-1].id, block_ms=50, until=time.monotonic() + 0.5))
    held = m.position()
    apply_events(r, [_event(ev.MODIFIED, "a", "14", "Failed")])
    assert [e.change.rv for e in m.changes(held, block_ms=50, until=time.monotonic() + 0.5)] == [
        "14"
    ]


def test_a_reset_of_the_mirror_is_a_gap(r: "redis.Redis") -> None:
    _jobs(r)
    m = Mirror(r)
    position = m.position()
    mirror.clear_state(r, KEYS)
    with pytest.raises(FeedGapError, match="reset"):
        list(m.changes(position, block_ms=50, until=time.monotonic() + 0.5))


def test_follow_lists_again_when_the_feed_was_trimmed_under_it(r: "redis.Redis") -> None:
    _jobs(r)
    m = Mirror(r)
    follow = m.follow(Query("job", phase="Running"), block_ms=50, until=time.monotonic() + 30)
    first = next(follow)
    assert isinstance(first, Snapshot) and sorted(first.objects) == ["ns:a", "ns:b"]
    # While the reader is away: a leaves Running, c enters it, and the feed is trimmed
    # past the reader's position.
    apply_events(
        r,
        [_event(ev.MODIFIED, "a", "20", "Completed"), _event(ev.MODIFIED, "c", "21", "Running")],
    )
    r.xtrim(KEYS.changes, maxlen=1, approximate=False)
    again = next(follow)
    assert isinstance(again, Snapshot) and sorted(again.objects) == ["ns:b", "ns:c"]
    apply_events(r, [_event(ev.DELETED, "b", "22")])
    update = next(follow)
    assert isinstance(update, Update) and update.member == "ns:b" and update.obj is None


def test_the_asyncio_reader_reads_the_same(r: "redis.Redis", redis_url: str) -> None:
    _jobs(r)

    async def read() -> tuple[
        list[str], dict[Values, int], list[FeedEntry], list[Snapshot | Update]
    ]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            m = AsyncMirror(client)
            names = [o.name for o in await m.objects(Query("job", queue="gpu"))]
            counts = await m.counts("job")
            entries = [e async for e in m.changes("0-0", block_ms=50, until=_in(0.3))]
            followed: list[Snapshot | Update] = []
            async for item in m.follow(Query("job"), block_ms=50, until=_in(0.3)):
                followed.append(item)
            return names, counts, entries, followed
        finally:
            await client.aclose()

    names, counts, entries, followed = asyncio.run(read())
    assert names == ["b", "c"]
    assert counts == Mirror(r).counts("job")
    assert len(entries) == 3
    assert isinstance(followed[0], Snapshot) and len(followed[0].objects) == 3


def _in(seconds: float) -> float:
    return time.monotonic() + seconds


def test_ls_and_counts_read_redis_alone(r: "redis.Redis", redis_url: str) -> None:
    from click.testing import CliRunner

    from kube2redis.cli import cli

    _jobs(r)
    run = CliRunner().invoke
    listed = run(cli, ["--redis-url", redis_url, "ls", "job", "--phase", "Running"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "PHASE", "QUEUE"]
    assert [line.split() for line in lines[1:]] == [
        ["ns", "a", "Running", "default"],
        ["ns", "b", "Running", "gpu"],
    ]
    names = run(cli, ["--redis-url", redis_url, "ls", "job", "--queue", "gpu", "-o", "name"])
    assert names.output.splitlines() == ["job/ns/b", "job/ns/c"]
    as_json = run(cli, ["--redis-url", redis_url, "ls", "job", "-n", "ns", "-o", "json"])
    items = json.loads(as_json.output)["items"]
    assert [i["metadata"]["name"] for i in items] == ["a", "b", "c"]
    wide = run(cli, ["--redis-url", redis_url, "ls", "job", "-o", "wide"])
    assert wide.output.splitlines()[1].split()[4:6] == ["10", "uid-a"]
    table = run(cli, ["--redis-url", redis_url, "counts", "job"])
    assert table.exit_code == 0, table.output
    assert [line.split() for line in table.output.splitlines()] == [
        ["PHASE", "default", "gpu", "TOTAL"],
        ["Pending", "0", "1", "1"],
        ["Running", "1", "1", "2"],
        ["TOTAL", "1", "2", "3"],
    ]


def test_a_follower_learns_of_an_object_indexed_by_its_relist(r: "redis.Redis") -> None:
    apply_events(r, [_event(ev.ADDED, "a", "5", "Running", "gpu")])
    # As a projector before indexes left it: the object, in no index set.
    r.delete(KEYS.index_records("job"), KEYS.counts("job"))
    r.delete(*r.scan_iter(match=KEYS.by_prefix("job") + "*"))
    m = Mirror(r)
    follow = m.follow(Query("job", phase="Running"), block_ms=50, until=time.monotonic() + 1)
    first = next(follow)
    assert isinstance(first, Snapshot) and first.objects == {}
    apply_events(r, [_event(ev.SYNC, "a", "5", "Running", "gpu"), relist_end("9", ["ns:a"])])
    updates = [u for u in follow if isinstance(u, Update)]
    assert [(u.member, u.obj and u.obj.rv) for u in updates] == [("ns:a", "5")]


def test_an_empty_value_is_refused_and_names_come_from_the_object(r: "redis.Redis") -> None:
    with pytest.raises(ValueError, match="phase '' is not indexed"):
        Query("job", phase="")
    with pytest.raises(ValueError, match="queue '' is not indexed"):
        Query("job", queue="")
    role = b'{"kind":"ClusterRole","metadata":{"name":"system:admin"}}'
    r.hset(KEYS.state("clusterrole", "", "system:admin"), mapping={"object": role, "rv": "1"})
    got = Mirror(r).get("clusterrole", "", "system:admin")
    assert got is not None and (got.namespace, got.name) == ("", "system:admin")


def test_a_sharded_mirror_reads_each_object_from_its_namespaces_shard(r: "redis.Redis") -> None:
    """--shards 3: each namespace's Jobs applied into its shard's keys; a get goes to
    that shard alone, a list and a count merge every shard's."""
    shards = ShardMap("k8s", 3)
    namespaces = [f"team-{i}" for i in range(12)]
    assert {shards.shard_of(ns) for ns in namespaces} == {0, 1, 2}
    for ns in namespaces:
        made = [job_event(ev.ADDED, f"j-{i}", 10 + i, ns) for i in range(2)]
        apply_events(r, made, shards.keys_of(ns))
    m = ShardedMirror.over(r, shards)
    got = m.get("job", "team-5", "j-1")
    assert got is not None and got.namespace == "team-5" and got.rv == "11"
    assert r.exists(shards.keys_of("team-5").state("job", "team-5", "j-1"))
    assert m.get("job", "team-5", "nope") is None
    listed = m.objects(Query("job"))
    assert [(o.namespace, o.name) for o in listed] == sorted(
        (ns, f"j-{i}") for ns in namespaces for i in range(2)
    )
    assert [o.name for o in m.objects(Query("job", namespace="team-7"))] == ["j-0", "j-1"]
    assert m.counts("job") == {Values("Pending", ""): 24}
    with pytest.raises(ValueError, match="3 shards"):
        ShardedMirror(shards, [Mirror(r, shards.keys(0))])
