"""Which key prefixes keep a mirror in one Redis Cluster slot."""

import pytest
import redis

from common.errors import ConfigError
from common.redisconn import connect
from common.redisslot import hash_tag
from kube2redis.localcluster.processes import free_port


def test_the_hash_tag_is_what_redis_cluster_hashes() -> None:
    assert hash_tag("{k8s}") == "k8s"
    assert hash_tag("team-a:{mirror}") == "mirror"
    assert hash_tag("k8s") is None
    assert hash_tag("{}k8s") is None  # an empty tag: Redis hashes the whole key
    assert hash_tag("k8s}{") is None


def test_a_cluster_url_needs_a_prefix_with_a_hash_tag() -> None:
    with pytest.raises(ConfigError, match="hash tag"):
        connect("redis+cluster://127.0.0.1:7000", key_prefix="k8s")


def test_a_cluster_down_at_connect_is_unreachable_not_a_crash() -> None:
    r = connect(
        f"redis+cluster://127.0.0.1:{free_port()}", key_prefix="{k8s}", retries=0, connect_timeout=1
    )
    with pytest.raises(redis.ConnectionError, match="redis cluster"):
        r.ping()
