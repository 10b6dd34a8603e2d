"""The history checker: from what the load generator recorded (every write the
API server acknowledged), the stream, the change feed and the final state, it
proves nothing was lost, reordered or resurrected. Each violation comes with the
smallest history that shows it: that object's writes, stream entries and
change-feed entries, and the faults around them."""

import json
from collections import defaultdict
from collections.abc import Iterable

import msgspec
import redis

from chaos.load import Write
from common import events as ev
from common.keys import Keys
from common.kube import KubeClient
from common.objects import decode_head, decode_list_page
from common.redisconn import text
from common.resources import Resource
from tests.support.redis_server import read_stream

KEYS = Keys()


class Violation(msgspec.Struct, frozen=True):
    check: str  # final-state | feed-order | resurrected | coverage | convergence | process-exit
    subject: str  # the object (kind ns/name) or process
    detail: str
    history: list[str] = msgspec.field(default_factory=list)


class Histories:
    """What Redis holds of the run, indexed by object."""

    def __init__(self, r: "redis.Redis") -> None:
        self.stream: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.feed: dict[str, list[tuple[str, str, str]]] = defaultdict(
            list
        )  # key -> (id, type, rv)
        self.seen: set[tuple[str, str]] = set()  # (uid, rv) in the stream
        self.relists: dict[str, list[int]] = defaultdict(list)  # kind -> list rvs ended
        self.stream_entries = 0
        for entry_id, fields in read_stream(r, KEYS.stream):
            self.stream_entries += 1
            event = ev.from_fields(fields)
            if event.type == ev.RELIST_END:
                self.relists[event.kind].append(int(event.rv))
                continue
            if event.is_marker:
                continue
            self.seen.add((event.uid, event.rv))
            key = (event.kind, Keys.member(event.namespace, event.name))
            self.stream[key].append(
                f"{entry_id.decode()} {event.type} rv={event.rv} uid={event.uid}"
            )
        self.resets: list[str] = []
        for entry_id, fields in read_stream(r, KEYS.changes):
            kind = fields.get(b"type", b"").decode()
            if kind == "RESET":
                self.resets.append(entry_id.decode())
                continue
            state_key = fields[b"key"].decode()
            self.feed[state_key].append((entry_id.decode(), kind, fields[b"rv"].decode()))


def check_feed(histories: Histories) -> list[Violation]:
    """Per key, the change feed's resourceVersions only grow (a RESET starts over);
    one that does not grow after a DELETED is an object brought back."""
    found = []
    for key, changes in histories.feed.items():
        last: tuple[str, str, str] | None = None
        for change in changes:
            if last is not None and any(
                _id(last[0]) < _id(reset) < _id(change[0]) for reset in histories.resets
            ):
                last = None
            if last is not None and int(change[2]) <= int(last[2]):
                check = "resurrected" if last[1] == "DELETED" else "feed-order"
                found.append(
                    Violation(
                        check,
                        key,
                        f"{change[1]} at rv {change[2]} after {last[1]} at rv {last[2]}",
                        [f"feed {c[0]} {c[1]} rv={c[2]}" for c in changes],
                    )
                )
                break
            last = change
    return found


def check_coverage(writes: Iterable[Write], histories: Histories) -> list[Violation]:
    """Every change the API server acknowledged is in the stream, or a relist of
    its kind that ended at or after it covers it."""
    found = []
    for write in writes:
        if not write.rv or (write.uid, write.rv) in histories.seen:
            continue
        if any(list_rv >= int(write.rv) for list_rv in histories.relists.get(write.kind, [])):
            continue
        member = Keys.member(write.namespace, write.name)
        found.append(
            Violation(
                "coverage",
                f"{write.kind} {member}",
                f"{write.op} at rv {write.rv} (uid {write.uid}) is in no stream entry and no "
                "relist covers it",
                histories.stream.get((write.kind, member), []),
            )
        )
    return found


def check_final_state(
    kube: KubeClient, r: "redis.Redis", resources: list[Resource], histories: Histories
) -> list[Violation]:
    """Every object in Redis is exactly the API server's last version, and nothing else."""
    found = []
    for resource in resources:
        kind = resource.key_kind
        live: dict[str, bytes] = {}
        params = {"limit": "500", **resource.spec.selector_params()}
        while True:
            page = decode_list_page(kube.get(resource.path(), params, timeout=60))
            for raw in page.items or ():
                meta = decode_head(bytes(raw)).metadata
                live[Keys.member(meta.namespace, meta.name)] = bytes(raw)
            if not page.metadata.next_page:
                break
            params["continue"] = page.metadata.next_page
        index = {m.decode() for m in r.smembers(KEYS.index(kind))}  # type: ignore[union-attr]
        # And by key name: a state key that lost its index member is still wrong.
        head = KEYS.state(kind, "", "")
        keyed = {text(k)[len(head) :] for k in r.scan_iter(match=head + "*", count=1000)}
        for member in sorted(set(live) | index | keyed):
            stored = r.hget(KEYS.state_of(kind, member), "object")
            problem = _compare(live.get(member), stored if isinstance(stored, bytes) else None)
            if problem:
                key = KEYS.state_of(kind, member)
                history = histories.stream.get((kind, member), [])
                history += [f"feed {c[0]} {c[1]} rv={c[2]}" for c in histories.feed.get(key, [])]
                found.append(Violation("final-state", f"{kind} {member}", problem, history))
    return found


def _id(entry_id: str) -> tuple[int, int]:
    """A stream id's order (as text, "5-10" sorts before "5-9")."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _compare(live: bytes | None, stored: bytes | None) -> str:
    if live is None and stored is None:
        return "in the index without a state key"
    if live is None:
        return "in Redis, not in the cluster (resurrected or never deleted)"
    if stored is None:
        return "in the cluster, missing from Redis"
    live_obj, stored_obj = json.loads(live), json.loads(stored)
    # A LIST item lacks kind and apiVersion for built-in types only; CRs have both.
    if live_obj != stored_obj:
        live_rv = live_obj["metadata"]["resourceVersion"]
        stored_rv = stored_obj["metadata"]["resourceVersion"]
        return f"stale: Redis holds rv {stored_rv}, the cluster rv {live_rv}"
    return ""
