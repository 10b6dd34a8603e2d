"""Resync on demand: a request that running watchers relist some scopes now,
carried through Redis like a CDC "signal", and their answers.

* A request is an entry of the stream ``k8s:resync``: which resource ("" = all;
  ``plural.group``, ``plural`` or the kind) in which namespace ("" = all), and why.
* Each watcher reads the requests (it starts a minute back, so one made while it
  restarted is still served), and for each scope it watches that matches, answers
  in the hash ``k8s:resync:{request id}``: "relisting" at once, "listed" with
  the list's resourceVersion once the relist has been handed to its writer.
* The relist has been *applied* once the projector's record of the scope's
  newest relist (``k8s:relist:{kind}:{ns}``) is at that resourceVersion or past it.
"""

import time
from typing import Any, Final, Literal

import msgspec
import redis

from common import rv as rvs
from common.events import entries_from_reply
from common.keys import Keys
from common.resources import Resource
from common.resp import call

REQUESTS_KEPT: Final = 1000
ANSWERS_TTL_S: Final = 24 * 3600
# A watcher serves requests made this long before it started (a restart in between).
LOOKBACK_S: Final = 60.0

AnswerState = Literal["relisting", "listed"]


class ResyncRequest(msgspec.Struct, frozen=True):
    resource: str = ""
    namespace: str = ""
    reason: str = "resync"  # resync | verify-repair | rebuild: the relists_total reason

    def matches(self, resource: Resource, namespace: str) -> bool:
        """Does the scope (resource, namespace; "" = all namespaces) hold what was asked?"""
        spec = resource.spec
        names = {spec.name, spec.plural, resource.key_kind}
        if self.resource and self.resource.lower() not in names:
            return False
        if not self.namespace:
            return True
        # An all-namespaces scope holds every namespace; a cluster-scoped kind none.
        return resource.namespaced and namespace in ("", self.namespace)


class ResyncAnswer(msgspec.Struct, frozen=True):
    scope: str
    kind: str
    namespace: str  # the scope's namespace ("" = all)
    watcher: str
    state: AnswerState
    list_rv: str = ""
    objects: int = 0


_encode = msgspec.json.Encoder().encode
_decode_answer = msgspec.json.Decoder(ResyncAnswer).decode


def request(r: "redis.Redis", keys: Keys, wanted: ResyncRequest) -> str:
    """Ask; returns the request's id."""
    # redis-py types fields as a dict of its own unions; dict invariance needs Any here.
    fields: dict[Any, Any] = msgspec.structs.asdict(wanted)
    entry_id = r.xadd(keys.resync_requests, fields, maxlen=REQUESTS_KEPT, approximate=True)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def start_cursor(now_s: float | None = None) -> str:
    """Where a watcher starts reading requests."""
    now_s = time.time() if now_s is None else now_s
    return f"{int((now_s - LOOKBACK_S) * 1000)}-0"


def read_requests(
    r: "redis.Redis", keys: Keys, after: str, count: int = 100
) -> tuple[str, list[tuple[str, ResyncRequest]]]:
    """Requests made after the id ``after``, and the id to read after next time.
    A malformed request cannot be served: it is passed over."""
    rows = entries_from_reply(
        call(r, b"XRANGE", keys.resync_requests, f"({after}", b"+", b"COUNT", count)
    )
    out: list[tuple[str, ResyncRequest]] = []
    for raw_id, fields in rows:
        decoded = {
            k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()
        }
        try:
            out.append((raw_id.decode(), msgspec.convert(decoded, ResyncRequest)))
        except msgspec.ValidationError:
            continue
    return (rows[-1][0].decode() if rows else after), out


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace")


def answer(r: "redis.Redis", keys: Keys, request_id: str, reply: ResyncAnswer) -> None:
    key = keys.resync_answers(request_id)
    pipe = r.pipeline(transaction=True)
    pipe.hset(key, reply.scope, _encode(reply))
    pipe.expire(key, ANSWERS_TTL_S)
    pipe.execute()


def answers(r: "redis.Redis", keys: Keys, request_id: str) -> dict[str, ResyncAnswer]:
    raw = r.hgetall(keys.resync_answers(request_id))
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): _decode_answer(v) for k, v in raw.items()
    }


def applied(r: "redis.Redis", keys: Keys, reply: ResyncAnswer) -> bool:
    """Has the projector applied the relist this answer announced?"""
    if reply.state != "listed":
        return False
    stored = r.hget(keys.relist(reply.kind, reply.namespace), "rv")
    if not stored:
        return False
    done = stored.decode() if isinstance(stored, bytes) else str(stored)
    return done == reply.list_rv or rvs.newer(done, reply.list_rv)
