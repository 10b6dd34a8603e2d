"""Whose mirror is this? Checked when a watcher starts, before any reflector runs.

The resourceVersions kept in Redis (checkpoints, state, tombstones, relist
records) only compare with those of the etcd that issued them. If the API server
now belongs to another cluster (a persistent Redis pointed at a recreated
cluster: its kube-system namespace has another uid) or its etcd went back in
time (restored from a backup: a checkpoint is ahead of the server), a relist
cannot mend the mirror, since stored objects would look newer than live ones.
Then the mirror is wiped (stream, checkpoints, every kind's state) and every
scope relists from nothing; the log says why, relists_total counts the reason.
"""

import logging
from collections.abc import Iterable

import redis

from common.keys import Keys
from common.kube import KubeClient
from common.mirror import clear_state
from common.redisconn import text
from common.resources import Resource
from watcher.reflector import rv_ahead

log = logging.getLogger(__name__)

Scope = tuple[str, Resource, str]  # scope id, resource, namespace ("" = all)


def reconcile(
    r: "redis.Redis",
    keys: Keys,
    kube: KubeClient,
    scopes: Iterable[Scope],
    checkpoints: dict[str, str],
) -> tuple[str | None, str]:
    """Wipe the mirror if it is another cluster's or from the future; returns why
    (the relist reason, or None when it is ours) and the cluster's identity."""
    uid = kube.cluster_uid()
    try:
        raw = r.get(keys.cluster)
    except redis.RedisError as exc:
        log.warning("redis unreachable at start: the cluster identity is not checked: %s", exc)
        return None, uid
    stored = text(raw) if raw else ""
    reason: str | None = None
    if stored and uid and stored != uid:
        reason = "cluster-changed"
        log.error(
            "this mirror belongs to another cluster (kube-system uid %s; the API server's is "
            "%s): wiping it and relisting everything",
            stored,
            uid,
        )
    else:
        for scope, resource, namespace in scopes:
            ours = checkpoints.get(scope)
            if not ours:
                continue
            current = kube.current_rv(resource.path(namespace), resource.spec.selector_params())
            if rv_ahead(ours, current):
                reason = "checkpoint-ahead"
                log.error(
                    "checkpoint %s of %s is ahead of the API server's resourceVersion %s "
                    "(etcd restored from a backup?): wiping the mirror and relisting everything",
                    ours,
                    scope,
                    current,
                )
                break
    if reason is not None:
        wipe(r, keys)
    if uid and uid != stored:
        r.set(keys.cluster, uid)
    return reason, uid


def wipe(r: "redis.Redis", keys: Keys) -> None:
    """Remove everything whose resourceVersions belong to the old etcd. Deleting
    the stream also drops its consumer group: an entry a projector read before
    is no longer pending, so its late apply does nothing (apply.lua)."""
    r.delete(keys.stream)
    cleared = clear_state(r, keys)
    # Checkpoints and marks last: a crash midway leaves the checkpoints that make the
    # next start wipe again, and another watcher sharing this Redis relists (its marks
    # gone) only once there is nothing left to clear under its relist.
    r.delete(keys.checkpoints, keys.checkpoint_marks, keys.checkpoint_writers)
    log.warning("mirror wiped: stream, checkpoints and state of %s", ", ".join(cleared) or "-")


def warn_about_eviction(r: "redis.Redis") -> None:
    """A maxmemory-policy that evicts drops keys the mirror needs; the watcher
    relists after evictions, but say it loudly at start."""
    try:
        policy = text(r.info("memory").get("maxmemory_policy", "noeviction"))
    except redis.RedisError:
        return
    if policy != "noeviction":
        log.warning(
            "redis maxmemory-policy is %s: it evicts state keys, and every eviction makes "
            "the watcher relist everything; set maxmemory-policy noeviction",
            policy,
        )
