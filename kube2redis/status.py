"""`kube2redis status`: what the pipeline is doing, read from Redis (and the local spool)."""

import logging
import time
from pathlib import Path
from typing import Any

import msgspec
import redis

from common.keys import Keys
from common.records import WatcherStatus, decode_watcher_status
from common.redisconn import text

log = logging.getLogger(__name__)


class GroupStatus(msgspec.Struct):
    name: str
    consumers: int
    pending: int
    lag: int | None
    last_delivered_id: str
    oldest_pending_age_s: float | None


class Status(msgspec.Struct):
    stream: str
    length: int
    first_id: str | None
    last_id: str | None
    last_event_age_s: float | None
    groups: list[GroupStatus]
    dead_letter: int
    checkpoints: dict[str, str]
    watchers: dict[str, WatcherStatus]
    local_spool_bytes: int | None
    # The shard's fence: the fencing token of its newest owner (None: not fenced).
    fence: int | None = None
    # What looks wrong, each with where to look first (empty: nothing found).
    findings: list[str] = msgspec.field(default_factory=list)


# A watcher publishes its status every 5 s; three missed means it is not running.
WATCHER_SILENT_S = 15.0
# Pending this long means no live projector holds the entry (reclaim takes 30 s).
PENDING_OLD_S = 120.0


def findings_of(status: "Status", keys: Keys, now_ns: int) -> list[str]:
    """What an operator should look at first, in the order to look."""
    found: list[str] = []
    if not status.watchers:
        found.append("no watcher has published a status: is one running against this Redis?")
    for wid, w in sorted(status.watchers.items()):
        silent_s = (now_ns - w.updated_ns) / 1e9
        if silent_s > WATCHER_SILENT_S:
            found.append(f"watcher {wid} silent {silent_s:.0f}s: stopped, or cannot reach Redis")
        elif w.health and not w.health.startswith("ok"):
            found.append(f"watcher {wid}: {w.health} (its /readyz says the same)")
        if w.spool_records:
            found.append(
                f"watcher {wid} spools ({w.spool_bytes} bytes): Redis refused or was away; "
                "it drains by itself once Redis takes writes"
            )
    if not status.groups and status.length:
        found.append("no consumer group: no projector has run against this stream")
    for g in status.groups:
        if g.oldest_pending_age_s is not None and g.oldest_pending_age_s > PENDING_OLD_S:
            found.append(
                f"group {g.name}: an entry pending {g.oldest_pending_age_s:.0f}s: are projectors "
                f"running? (XPENDING {status.stream} {g.name} - + 10)"
            )
        if g.lag:
            found.append(f"group {g.name}: {g.lag} entries not read yet (projectors behind?)")
    if status.dead_letter:
        found.append(
            f"{status.dead_letter} dead letters: each says why "
            f"(XREVRANGE {keys.dead_letter} + - COUNT 5)"
        )
    return found


def _age_of(entry_id: str | None) -> float | None:
    if not entry_id:
        return None
    return max(0.0, time.time() - int(entry_id.split("-")[0]) / 1000)


def collect(r: "redis.Redis", keys: Keys, spool_dir: Path | None = None) -> Status:
    stream = keys.stream
    length = int(r.xlen(stream))
    first = r.xrange(stream, count=1)
    last = r.xrevrange(stream, count=1)
    first_id = text(first[0][0]) if first else None
    last_id = text(last[0][0]) if last else None
    groups = []
    if length or r.exists(stream):
        for g in r.xinfo_groups(stream):
            name = text(g["name"])
            oldest_age = None
            if g["pending"]:
                oldest = r.xpending(stream, name)["min"]
                oldest_age = _age_of(text(oldest))
            groups.append(
                GroupStatus(
                    name=name,
                    consumers=int(g["consumers"]),
                    pending=int(g["pending"]),
                    lag=g.get("lag"),
                    last_delivered_id=text(g["last-delivered-id"]),
                    oldest_pending_age_s=oldest_age,
                )
            )
    checkpoints = {text(k): text(v) for k, v in r.hgetall(keys.checkpoints).items()}
    watchers: dict[str, WatcherStatus] = {}
    for wid, raw in r.hgetall(keys.watchers).items():
        try:
            watchers[text(wid)] = decode_watcher_status(raw)
        except msgspec.MsgspecError as exc:
            log.warning("watcher %s published a status that does not read: %s", text(wid), exc)
    spool_bytes = None
    if spool_dir is not None and spool_dir.is_dir():
        spool_bytes = sum(p.stat().st_size for p in spool_dir.glob("*.seg"))
    status = Status(
        stream=stream,
        length=length,
        first_id=first_id,
        last_id=last_id,
        last_event_age_s=_age_of(last_id),
        groups=groups,
        dead_letter=int(r.xlen(keys.dead_letter)),
        checkpoints=checkpoints,
        watchers=watchers,
        local_spool_bytes=spool_bytes,
        fence=None if (fence := r.get(keys.fence)) is None else int(fence),
    )
    status.findings = findings_of(status, keys, time.time_ns())
    return status


def render(status: Status) -> Any:
    """A rich renderable of the status."""
    from rich.console import Group
    from rich.table import Table

    overview = Table(title="stream", show_header=False)
    age = f"{status.last_event_age_s:.1f}s ago" if status.last_event_age_s is not None else "-"
    for label, value in (
        ("key", status.stream),
        ("length", str(status.length)),
        ("first id", status.first_id or "-"),
        ("last id", status.last_id or "-"),
        ("last event", age),
        ("dead letters", str(status.dead_letter)),
        ("fence (newest owner's token)", "-" if status.fence is None else str(status.fence)),
        (
            "local spool bytes",
            "-" if status.local_spool_bytes is None else str(status.local_spool_bytes),
        ),
    ):
        overview.add_row(label, value)
    groups = Table(title="consumer groups")
    for col in ("group", "consumers", "lag", "pending", "oldest pending", "last delivered"):
        groups.add_column(col)
    for g in status.groups:
        oldest = f"{g.oldest_pending_age_s:.1f}s" if g.oldest_pending_age_s is not None else "-"
        groups.add_row(
            g.name,
            str(g.consumers),
            str(g.lag if g.lag is not None else "?"),
            str(g.pending),
            oldest,
            g.last_delivered_id,
        )
    checkpoints = Table(title="watcher checkpoints")
    checkpoints.add_column("scope")
    checkpoints.add_column("resourceVersion")
    for scope, rv in sorted(status.checkpoints.items()):
        checkpoints.add_row(scope, rv)
    watchers = Table(title="watchers")
    for col in ("id", "spool bytes", "spool records", "updated", "health"):
        watchers.add_column(col)
    for wid, w in sorted(status.watchers.items()):
        updated = time.time() - w.updated_ns / 1e9
        watchers.add_row(
            wid, str(w.spool_bytes), str(w.spool_records), f"{updated:.0f}s ago", w.health
        )
    look = Table(title="where to look first", show_header=False)
    for finding in status.findings or ["nothing looks wrong"]:
        look.add_row(finding)
    return Group(look, overview, groups, checkpoints, watchers)
