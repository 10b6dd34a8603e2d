"""Compare the state keys with the live cluster: missing, extra, stale."""

import time

import msgspec
import redis

from common.keys import Keys
from common.kube import KubeClient
from common.objects import decode_head, decode_list_page
from common.resources import Resource


class Drift(msgspec.Struct, frozen=True):
    kind: str
    member: str
    problem: str  # missing | extra | stale | unindexed | index-orphan
    live_rv: str = ""
    stored_rv: str = ""


def live_objects(kube: KubeClient, resource: Resource, namespace: str) -> dict[str, str]:
    """member -> resourceVersion of every live object in scope (paginated LIST)."""
    params = {"limit": "500", **resource.spec.selector_params()}
    out: dict[str, str] = {}
    while True:
        page = decode_list_page(kube.get(resource.path(namespace), params, timeout=60))
        for raw in page.items or ():
            meta = decode_head(bytes(raw)).metadata
            out[Keys.member(meta.namespace, meta.name)] = meta.resourceVersion
        if not page.metadata.next_page:
            return out
        params["continue"] = page.metadata.next_page


def verify_resource(
    kube: KubeClient, r: "redis.Redis", keys: Keys, resource: Resource, namespaces: list[str]
) -> list[Drift]:
    kind = resource.key_kind
    scopes = namespaces if resource.namespaced and namespaces else [""]
    live: dict[str, str] = {}
    for namespace in scopes:
        live.update(live_objects(kube, resource, namespace))

    def in_scope(member: str) -> bool:
        return not scopes[0] or Keys.namespace_of(member, resource.namespaced) in scopes

    index = {m.decode() for m in r.smembers(keys.index(kind))}  # type: ignore[union-attr]
    prefix = keys.state(kind, "", "")
    keyed = {k.decode()[len(prefix) :] for k in r.scan_iter(match=prefix + "*", count=1000)}
    members = sorted({m for m in index | keyed | set(live) if in_scope(m)})
    pipe = r.pipeline(transaction=False)
    for member in members:
        pipe.hget(keys.state_of(kind, member), "rv")
    stored = dict(zip(members, pipe.execute(), strict=True))
    drift = []
    for member in members:
        stored_rv = stored[member].decode() if stored[member] else ""
        live_rv = live.get(member, "")
        if live_rv and not stored_rv:
            drift.append(Drift(kind, member, "missing", live_rv=live_rv))
        elif stored_rv and not live_rv:
            drift.append(Drift(kind, member, "extra", stored_rv=stored_rv))
        elif live_rv and stored_rv != live_rv:
            drift.append(Drift(kind, member, "stale", live_rv, stored_rv))
        elif stored_rv and member not in index:
            drift.append(Drift(kind, member, "unindexed", live_rv, stored_rv))
        if member in index and not stored_rv and not live_rv:
            drift.append(Drift(kind, member, "index-orphan"))
    return drift


def drift_of(
    kube: KubeClient,
    r: "redis.Redis",
    keys: Keys,
    resources: list[Resource],
    namespaces: list[str],
    retries: int,
) -> list[Drift]:
    """Drift of every resource, checked again up to `retries` times, 1 s apart
    (objects in flight, relist entries still pending on another projector, settle)."""
    found: list[Drift] = []
    for attempt in range(retries + 1):
        found = [d for res in resources for d in verify_resource(kube, r, keys, res, namespaces)]
        if not found or attempt == retries:
            break
        time.sleep(1.0)
    return found


def scopes_of(drift: list[Drift], resources: list[Resource]) -> list[tuple[str, str]]:
    """(resource name, namespace) of each scope with drift: what a repair relists."""
    by_kind = {res.key_kind: res for res in resources}
    return sorted(
        {
            (by_kind[d.kind].spec.name, Keys.namespace_of(d.member, by_kind[d.kind].namespaced))
            for d in drift
        }
    )
