"""Which shard holds an object, and the key prefix of each shard.

With ``--shards N`` (N > 1) the mirror is split into N complete mirrors, one per
shard, each with every key of its own (stream, checkpoints, guard marks, group,
change feed, dead letters, indexes, relist records, state, tombstones) under the
prefix ``{<prefix>:<shard>/<N>}``. The braces are a Redis Cluster hash tag: every
key of a shard lives in one slot, so each MULTI/EXEC and each script touches one
slot, and the shards spread over the cluster's primaries. The count is in the tag
because a namespace's shard depends on it: with another --shards the keys are
another mirror's, built afresh, never a mix of two layouts (shard 0 of 2 holds
objects that shard 0 of 4 must not).

An object's shard is a stable hash of its namespace (CRC-32, as zlib, Go's
hash/crc32 and Java's java.util.zip.CRC32 compute it, modulo N), so a Job, its
PodGroup and its Pods share a shard, and a reader finds any object from (kind,
namespace, name) alone. Cluster-scoped objects (no namespace) are in shard 0.

With one shard (the default) nothing changes: the keys are ``<prefix>:...`` as
before, and on a Redis Cluster the prefix carries its own hash tag ('{k8s}').
"""

import zlib
from collections.abc import Callable

import msgspec

from common.errors import ConfigError
from common.keys import DEFAULT_PREFIX, Keys


def shard_of(namespace: str, shards: int) -> int:
    """The shard holding the objects of a namespace ("" = cluster-scoped: 0)."""
    if shards <= 1 or not namespace:
        return 0
    return zlib.crc32(namespace.encode()) % shards


class ShardMap(msgspec.Struct, frozen=True):
    """The shards of one mirror: how many, and their key prefixes."""

    prefix: str = DEFAULT_PREFIX
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--shards {self.count}: there must be at least one")
        if self.count > 1 and ("{" in self.prefix or "}" in self.prefix):
            raise ConfigError(
                f"--key-prefix {self.prefix!r}: with --shards each shard's prefix gets "
                "its own hash tag ({prefix:shard/count}); give the prefix without braces"
            )

    def shard_of(self, namespace: str) -> int:
        return shard_of(namespace, self.count)

    def prefix_of(self, shard: int) -> str:
        if not 0 <= shard < self.count:
            raise ConfigError(f"--shard {shard}: not one of the {self.count} shards (0-based)")
        return self.prefix if self.count == 1 else f"{{{self.prefix}:{shard}/{self.count}}}"

    def keys(self, shard: int) -> Keys:
        """The keys of one shard."""
        return Keys(self.prefix_of(shard))

    def keys_of(self, namespace: str) -> Keys:
        """The keys of the shard holding a namespace's objects."""
        return self.keys(self.shard_of(namespace))

    @property
    def all(self) -> range:
        return range(self.count)

    def holds(self, shard: int) -> Callable[[str], bool] | None:
        """A filter on namespaces: those whose objects shard holds (None: one shard
        holds them all)."""
        if self.count == 1:
            return None
        return lambda namespace: self.shard_of(namespace) == shard
