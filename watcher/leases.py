"""One Lease (coordination.k8s.io/v1) per shard, and the fencing token each
acquisition yields.

Why not kubernetes.leaderelection (the `kubernetes` package): it runs one blocking
election per thread that never returns while it leads or waits (no stop, no
bound), measures time in whole seconds of sleep, keeps the resourceVersion of the
write that acquired the lock to itself, and does not maintain leaseTransitions.
A watcher fleet holds N leases in one loop and needs that resourceVersion as its
fencing token. So this is a small lease loop of our own, with client-go's rules
(tools/leaderelection: tryAcquireOrRenew):

* a lease is expired when the record we observed has not changed for its
  leaseDurationSeconds *on our clock* since we first saw it (renewTime is never
  compared with our clock: the clocks of two nodes may differ);
* every write carries the resourceVersion read, so of two candidates only one
  wins (the other gets 409 Conflict);
* the holder gives the shard up (its watcher is killed) when it could not renew
  within the renew deadline, shorter than the lease duration.

The token is the resourceVersion of the write (create or update) that acquired the
lease. resourceVersion is etcd's revision: it grows with every write in the
cluster, so a later acquisition always has a higher one, also after the Lease was
deleted and created again, or taken back by the same holder. leaseTransitions does
not always grow: client-go does not count a holder taking back its own expired
lease, a recreated Lease starts again at 0, and this Python library never sets it.
(A restored etcd backup rewinds resourceVersions; the watchers then wipe and
relist: watcher/identity.py.)

The request path is the project's raw client (common/kube.py): its TLS, auth and
errors are the watcher's, and the answers' resourceVersion comes as sent.
"""

import json
import time
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import msgspec

from common.kube import KubeError, KubeNotFoundError

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
_POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def in_cluster_namespace() -> str | None:
    """The namespace of the pod we run in (None outside a cluster)."""
    return _POD_NAMESPACE.read_text().strip() if _POD_NAMESPACE.is_file() else None


class LeaseSettings(msgspec.Struct, frozen=True):
    # client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    duration_s: int = 15
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    # Each API call of the loop is bounded by this (so one tick is bounded too).
    request_timeout_s: float = 5.0


class Lease(msgspec.Struct, frozen=True):
    """What the loop reads of a Lease."""

    name: str
    rv: str
    holder: str
    duration_s: int
    transitions: int = 0
    acquire_time: str = ""


class Action(Enum):
    CREATE = "create"  # no Lease yet: create it, holding it
    RENEW = "renew"  # ours: update renewTime
    ACQUIRE = "acquire"  # free or expired: take it (leaseTransitions + 1)
    WAIT = "wait"  # someone else holds it and it has not expired


class Observed(msgspec.Struct, frozen=True):
    """The record last seen of a lease and when (our monotonic clock) it was first
    seen so: an unchanged record this old is expired."""

    rv: str
    since: float


def expired(observed: Observed, duration_s: float, now: float) -> bool:
    return now - observed.since >= duration_s


def decide(
    lease: Lease | None,
    observed: Observed | None,
    me: str,
    holding: bool,
    now: float,
    grace_s: float,
    create: bool,
) -> Action:
    """What to do with one shard's lease this tick.

    holding: we hold it now (a renew, not an acquisition: the token stays).
    create: we may create it when it does not exist (the shard's preferred owner);
    others wait grace_s (a lease duration) from when they first saw it missing.
    """
    if lease is None:
        if create or (observed is not None and expired(observed, grace_s, now)):
            return Action.CREATE
        return Action.WAIT
    if lease.holder == me:
        # Not holding it but named in it: this process restarted (same pod). Taking it
        # at once is safe: it is a new acquisition with a higher token, which fences
        # off whatever the previous process may have left running.
        return Action.RENEW if holding else Action.ACQUIRE
    if not lease.holder:
        return Action.ACQUIRE  # released
    if observed is None or observed.rv != lease.rv:
        return Action.WAIT  # changed since we last looked: its holder is alive
    return Action.ACQUIRE if expired(observed, lease.duration_s, now) else Action.WAIT


class LeaseApi(Protocol):
    def get(self, name: str) -> Lease | None: ...
    def create(self, name: str, holder: str, duration_s: int) -> Lease: ...
    def update(self, lease: Lease, holder: str, duration_s: int, acquire: bool) -> Lease: ...


class Raw(Protocol):
    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> bytes: ...


def _micro_time(at: float) -> str:
    """metav1.MicroTime as the API server writes it."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lease_of(data: bytes) -> Lease:
    obj: dict[str, Any] = json.loads(data)
    spec = obj.get("spec") or {}
    return Lease(
        name=obj["metadata"]["name"],
        rv=obj["metadata"]["resourceVersion"],
        holder=spec.get("holderIdentity") or "",
        duration_s=int(spec.get("leaseDurationSeconds") or 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        acquire_time=spec.get("acquireTime") or "",
    )


class KubeLeases:
    """Leases of one namespace through the raw client. Errors are KubeError's
    (409 Conflict: someone else wrote the lease since we read it)."""

    def __init__(self, kube: Raw, namespace: str, timeout_s: float) -> None:
        self._kube, self._path, self._timeout = kube, LEASES.format(namespace=namespace), timeout_s

    def get(self, name: str) -> Lease | None:
        try:
            return _lease_of(self._kube.call("GET", f"{self._path}/{name}", timeout=self._timeout))
        except KubeNotFoundError:
            return None

    def create(self, name: str, holder: str, duration_s: int) -> Lease:
        now = _micro_time(time.time())
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration_s,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        data = self._kube.call("POST", self._path, json.dumps(body).encode(), timeout=self._timeout)
        return _lease_of(data)

    def update(self, lease: Lease, holder: str, duration_s: int, acquire: bool) -> Lease:
        """Renew (acquire False) or take over; fails with 409 unless the lease is
        still at lease.rv."""
        now = _micro_time(time.time())
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease.name, "resourceVersion": lease.rv},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration_s,
                "acquireTime": now if acquire else (lease.acquire_time or now),
                "renewTime": now,
                "leaseTransitions": lease.transitions + (1 if acquire else 0),
            },
        }
        data = self._kube.call(
            "PUT", f"{self._path}/{lease.name}", json.dumps(body).encode(), timeout=self._timeout
        )
        return _lease_of(data)


class Held(msgspec.Struct):
    """A lease we hold: its token, and when the last renew that succeeded was sent."""

    token: int
    renewed_at: float


class Step(msgspec.Struct, frozen=True):
    """One tick's outcome for one shard: acquired (with the new token), lost (the
    holder must stop its watcher at once), or neither."""

    acquired: int | None = None
    lost: str = ""


class ShardLease:
    """The loop's state for one shard's lease."""

    def __init__(self, name: str, me: str, settings: LeaseSettings, preferred: bool) -> None:
        self.name, self.me, self.settings, self.preferred = name, me, settings, preferred
        self.observed: Observed | None = None
        self.held: Held | None = None
        self.last_error = ""

    def tick(self, api: LeaseApi, now: float) -> Step:
        """Read the lease and act on it; every call bounded by the request timeout.
        A holder that could not renew by its renew deadline has lost the lease."""
        try:
            lease = api.get(self.name)
            self._observe(lease, now)
            action = decide(
                lease,
                self.observed,
                self.me,
                self.held is not None,
                now,
                self.settings.duration_s,
                self.preferred,
            )
            if self.held is not None and (lease is None or lease.holder != self.me):
                holder = "nobody (deleted)" if lease is None else lease.holder or "nobody"
                return self._lose(f"{holder} holds it now")
            if action is Action.WAIT:
                return self._deadline(now)
            sent = now
            if action is Action.CREATE:
                written = api.create(self.name, self.me, self.settings.duration_s)
            else:
                assert lease is not None
                acquire = action is Action.ACQUIRE
                written = api.update(lease, self.me, self.settings.duration_s, acquire)
        except KubeError as exc:
            self.last_error = str(exc)
            if exc.status == 409 and self.held is not None:
                return self._lose("another candidate wrote it (409 Conflict)")
            return self._deadline(now)
        self.last_error = ""
        self._observe(written, now)
        if self.held is not None:
            self.held.renewed_at = sent
            return Step()
        self.held = Held(int(written.rv), sent)
        return Step(acquired=self.held.token)

    def overdue(self, now: float) -> Step:
        """Lost if the last renew is older than the renew deadline: checked apart
        from tick, so an API server that hangs on every call cannot delay it."""
        return self._deadline(now)

    def release(self, api: LeaseApi) -> None:
        """Give the lease up (its watcher has stopped): a standby need not wait for
        it to expire. Best effort: it expires anyway."""
        if self.held is None:
            return
        self.held = None
        lease = api.get(self.name)
        if lease is not None and lease.holder == self.me:
            api.update(lease, "", lease.duration_s, acquire=False)

    def _observe(self, lease: Lease | None, now: float) -> None:
        rv = lease.rv if lease is not None else ""
        if self.observed is None or self.observed.rv != rv:
            self.observed = Observed(rv, now)

    def _deadline(self, now: float) -> Step:
        held = self.held
        if held is not None and now - held.renewed_at >= self.settings.renew_deadline_s:
            return self._lose(
                f"not renewed for {now - held.renewed_at:.1f}s "
                f"(renew deadline {self.settings.renew_deadline_s:g}s)"
                + (f": {self.last_error}" if self.last_error else "")
            )
        return Step()

    def _lose(self, why: str) -> Step:
        self.held = None
        return Step(lost=why)
