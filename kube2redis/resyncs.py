"""The CLI's side of a resync: ask (common/resync.py), then follow the watchers'
answers until every relist they started has been applied by a projector."""

import time
from collections.abc import Callable
from typing import Literal

import redis

from common import resync
from common.errors import Kube2RedisError
from common.keys import Keys

# Watchers read requests every second: after the first answer, others may follow.
GRACE_S = 3.0
POLL_S = 0.5


Until = Literal["listed", "applied"]


def run(
    r: "redis.Redis",
    keys: Keys,
    wanted: resync.ResyncRequest,
    timeout_s: float,
    say: Callable[[str], None],
    until: Until = "applied",
) -> list[resync.ResyncAnswer]:
    """Request a resync and wait (bounded) until every relist it started is
    applied by a projector (or only listed, when no projector runs yet); says
    each step."""
    request_id = resync.request(r, keys, wanted)
    what = f"{wanted.resource or 'every resource'} in {wanted.namespace or 'every namespace'}"
    say(f"resync {request_id} requested: {what}")
    return follow(r, keys, request_id, timeout_s, say, until)


def follow(
    r: "redis.Redis",
    keys: Keys,
    request_id: str,
    timeout_s: float,
    say: Callable[[str], None],
    until: Until = "applied",
) -> list[resync.ResyncAnswer]:
    began = time.monotonic()
    first_answer: float | None = None
    said: dict[str, str] = {}
    current: dict[str, resync.ResyncAnswer] = {}
    while (now := time.monotonic()) - began < timeout_s:
        current = resync.answers(r, keys, request_id)
        for scope, reply in sorted(current.items()):
            state = "applied" if resync.applied(r, keys, reply) else reply.state
            if said.get(scope) != state:
                said[scope] = state
                say(_line(reply, state))
        if current and first_answer is None:
            first_answer = now
        done = ("listed", "applied") if until == "listed" else ("applied",)
        settled = all(said.get(scope) in done for scope in current)
        if first_answer is not None and now - first_answer >= GRACE_S and settled:
            return list(current.values())
        time.sleep(POLL_S)
    if not current:
        raise Kube2RedisError(
            f"no watcher answered resync request {request_id} within {timeout_s:.0f}s: is a "
            "watcher of that resource running against this Redis (same --key-prefix)?"
        )
    waiting = sorted(scope for scope in current if said.get(scope) not in done)
    raise Kube2RedisError(
        f"resync {request_id} not {until} within {timeout_s:.0f}s: {', '.join(waiting)}"
        + (" (is a projector running?)" if until == "applied" else "")
    )


def _line(reply: resync.ResyncAnswer, state: str) -> str:
    if state == "relisting":
        return f"{reply.scope}: relisting (watcher {reply.watcher})"
    if state == "listed":
        return f"{reply.scope}: listed {reply.objects} objects at rv {reply.list_rv}"
    return f"{reply.scope}: relisted {reply.objects} objects at rv {reply.list_rv}, applied"
