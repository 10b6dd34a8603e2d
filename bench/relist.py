"""The relist scenario: how long applying one RELIST_END of `objects` Jobs in one
namespace holds Redis, and how long it takes.

No API server: the mirror is seeded through the projector's own apply path
(tests/support/apply.py: the apply.lua calls a projector makes, in replay mode), as
if a watcher had listed the Jobs; then `deleted` of them vanish without their
DELETED events (the watch missed them: why a relist happens) and a RELIST_END that
lists the rest is applied by a projector consuming the group (Mode.ACK, one
`step()`, as in production). Its figures:

* longest_call_ms: the longest single command Redis ran meanwhile (SLOWLOG with
  slowlog-log-slower-than 0 logs every command with its execution time in
  microseconds, so the maximum is exact); longest_evalsha_ms: the longest script
  call; longest_inner_ms: the longest single command a script ran (each a few
  microseconds of work: when it is milliseconds, the machine took the CPU from
  Redis mid-call, and the longest call says so too); calls: how many commands the
  consumer's step sent (the relist's, and the step's own read, reclaim and
  heartbeat).
* relist_s: the consumer's step, read to acked, on the projector's clock.

The Jobs are small (about 170 bytes): a relist's work does not depend on an
object's size but for the few it deletes. `python -m bench.relist --out FILE` runs
it alone (it works against any checkout of the projector: how the numbers before
chunking were taken).
"""

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from common import events as ev
from common.keys import Keys
from projector.consumer import ConsumerSettings, Projector
from projector.metrics import ProjectorMetrics
from tests.support.apply import apply_events
from tests.support.events import job_event, relist_end
from tests.support.redis_server import RedisServer, append_event

KEYS = Keys()
NS = "bench"
GROUP = "projector"
SEED_CHUNK = 10_000
LIST_RV = 10_000_000  # newer than every seeded object
SCRIPT_CLIENT = b"?:0"  # SLOWLOG's client address of a command a script ran


def _seed(r: "redis.Redis", objects: int) -> None:
    for start in range(0, objects, SEED_CHUNK):
        chunk = range(start, min(start + SEED_CHUNK, objects))
        apply_events(r, [job_event(ev.ADDED, f"j-{i}", str(i + 1), NS) for i in chunk])
    # The seeding's entries are not the relist's: trimmed, as retention would.
    r.xtrim(KEYS.stream, maxlen=0)


def relist_once(objects: int, deleted: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-relist-") as directory:
        server = RedisServer(Path(directory), ["--appendonly", "no"]).start()
        try:
            r = server.client(socket_timeout=60)
            _seed(r, objects)
            r.xgroup_create(KEYS.stream, GROUP, id="$")
            gone = set(random.Random(objects).sample(range(objects), deleted))
            listed = [f"{NS}:j-{i}" for i in range(objects) if i not in gone]
            append_event(r, KEYS.stream, relist_end(str(LIST_RV), listed, NS))
            projector = Projector(
                r, KEYS, ConsumerSettings(group=GROUP, consumer="bench"), ProjectorMetrics()
            )
            projector.ensure_group()
            projector.sender.load_scripts()
            r.config_set("slowlog-max-len", 1_000_000)
            r.config_set("slowlog-log-slower-than", 0)
            r.slowlog_reset()
            began = time.perf_counter()
            handled = projector.step()
            relist_s = time.perf_counter() - began
            r.config_set("slowlog-log-slower-than", 10_000)
            log = r.slowlog_get(1_000_000)
            assert handled == 1, handled
            # Done, and right: the listed objects kept, the vanished ones deleted.
            assert r.scard(KEYS.index("job")) == objects - deleted
            assert r.hget(KEYS.relist("job", NS), "rv") == str(LIST_RV).encode()
            assert all(r.exists(KEYS.tombstone("job", NS, f"j-{i}")) for i in gone)
            assert not r.xpending(KEYS.stream, GROUP)["pending"]
            # The commands a script runs are logged too (client "?:0"), inside their
            # EVALSHA's time; our own CONFIG SET that turned logging down is not the
            # relist's.
            calls = [
                e
                for e in log
                if e["client_address"] != SCRIPT_CLIENT and not e["command"].startswith(b"CONFIG")
            ]
            scripts = [e for e in calls if e["command"].startswith(b"EVALSHA")]
            inner = [int(e["duration"]) for e in log if e["client_address"] == SCRIPT_CLIENT]
            return {
                "objects": objects,
                "deleted": deleted,
                "longest_call_ms": max(int(e["duration"]) for e in calls) / 1000,
                "longest_evalsha_ms": max(int(e["duration"]) for e in scripts) / 1000,
                "longest_inner_ms": max(inner) / 1000,
                "calls": len(calls),
                "relist_s": relist_s,
            }
        finally:
            server.stop()


def relist(objects: int, deleted: int, runs: int) -> list[dict[str, float]]:
    return [relist_once(objects, deleted) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--deleted", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the runs")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = relist(args.objects, args.deleted, args.runs)
    for run in runs:
        print(run)
    args.out.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
