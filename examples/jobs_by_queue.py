"""A live "jobs by queue and phase" terminal view, read from the mirror alone.

    python examples/jobs_by_queue.py [--redis-url redis://127.0.0.1:6379/0]

Built on kube2redis.client: the counters (one HGETALL) are read once, then again
whenever the change feed says a Job changed (at most every --refresh seconds); a
gap in the feed (trimmed past, or the mirror reset) is no problem here, since every
refresh reads the counters afresh. Ctrl-C to stop.
"""

import argparse
import contextlib
import time

import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from common.indexes import Values
from common.keys import Keys
from kube2redis.client import FeedGapError, Mirror, member_of


def render(counts: dict[Values, int], changes: int) -> Table:
    phases = sorted({v.phase for v in counts})
    queues = sorted({v.queue for v in counts})
    table = Table(title=f"Volcano Jobs by queue and phase ({changes} changes seen)")
    table.add_column("queue")
    for phase in phases:
        table.add_column(phase or "-", justify="right")
    table.add_column("total", justify="right", style="bold")
    for queue in queues:
        cells = [counts.get(Values(phase, queue), 0) for phase in phases]
        table.add_row(queue or "-", *map(str, cells), str(sum(cells)))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--refresh", type=float, default=0.5, help="seconds between redraws")
    args = parser.parse_args()
    keys = Keys()
    mirror = Mirror(redis.Redis.from_url(args.redis_url), keys)
    seen = 0
    with Live(render(mirror.counts("job"), seen), console=Console(), auto_refresh=False) as live:
        position = mirror.position()
        while True:
            try:
                changed = False
                until = time.monotonic() + args.refresh
                for entries in mirror.batches(position, block_ms=1000, until=until):
                    position = entries[-1].id
                    jobs = [e for e in entries if member_of(keys, "job", e.change.key)]
                    seen += len(jobs)
                    changed = changed or bool(jobs)
                if changed:
                    live.update(render(mirror.counts("job"), seen), refresh=True)
            except FeedGapError:
                position = mirror.position()
                live.update(render(mirror.counts("job"), seen), refresh=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
