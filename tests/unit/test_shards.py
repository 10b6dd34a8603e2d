"""Which shard holds a namespace, and each shard's key prefix: a layout readers in
other languages compute too, so it must never change by accident."""

import zlib

import pytest

from common.errors import ConfigError
from common.keys import Keys
from common.shards import ShardMap, shard_of


def test_one_shard_keeps_the_layout_of_before() -> None:
    assert ShardMap("k8s", 1).keys(0) == Keys("k8s")
    assert ShardMap("{k8s}", 1).keys(0).stream == "{k8s}:events"  # a cluster's one slot
    assert ShardMap("k8s", 1).holds(0) is None


def test_a_namespaces_shard_is_crc32_modulo_the_count_and_cluster_scoped_is_shard_0() -> None:
    # Literal values: CRC-32 (IEEE) as Go's hash/crc32.ChecksumIEEE and zlib compute it.
    assert zlib.crc32(b"team-a") == 0xA9A9D57D
    assert shard_of("team-a", 4) == 0xA9A9D57D % 4
    assert shard_of("", 4) == 0
    assert shard_of("team-a", 1) == 0
    spread = {shard_of(f"ns-{i}", 4) for i in range(100)}
    assert spread == {0, 1, 2, 3}


def test_each_shard_has_its_own_hash_tagged_prefix() -> None:
    shards = ShardMap("k8s", 3)
    assert [shards.prefix_of(s) for s in shards.all] == ["{k8s:0/3}", "{k8s:1/3}", "{k8s:2/3}"]
    # Another count is another mirror: no key of one layout is a key of the other.
    assert ShardMap("k8s", 4).prefix_of(0) == "{k8s:0/4}"
    keys = shards.keys_of("team-a")
    assert keys.state("job", "team-a", "j") == f"{{k8s:{shard_of('team-a', 3)}/3}}:job:team-a:j"
    holds = shards.holds(1)
    assert holds is not None
    assert [holds(ns) for ns in ("", "team-a")] == [False, shard_of("team-a", 3) == 1]


@pytest.mark.parametrize(
    ("prefix", "count", "shard", "says"),
    [("{k8s}", 2, 0, "without braces"), ("k8s", 0, 0, "at least one"), ("k8s", 2, 2, "--shard 2")],
)
def test_a_layout_that_cannot_work_is_refused(
    prefix: str, count: int, shard: int, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        ShardMap(prefix, count).prefix_of(shard)
