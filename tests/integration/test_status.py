"""`kube2redis status` against a real redis-server: it reads the pipeline's state
and says where to look first."""

import json

from common.keys import Keys
from tests import procs as kprocs
from tests.support.redis_server import RedisServer

KEYS = Keys()


def test_status_says_where_to_look_first(redis_server: RedisServer) -> None:
    r = redis_server.client()
    r.xadd(KEYS.stream, {"type": "ADDED"})
    r.xadd(KEYS.dead_letter, {"dead_reason": "malformed: no rv"})

    shown = kprocs.run(["--redis-url", redis_server.url, "status"])
    assert shown.returncode == 0, shown.stderr
    assert "where to look first" in shown.stdout
    assert "1 dead letters" in shown.stdout
    assert "no watcher has published a status" in shown.stdout

    as_json = json.loads(kprocs.run(["--redis-url", redis_server.url, "status", "--json"]).stdout)
    assert [f.split(":")[0] for f in as_json["findings"]] == [
        "no watcher has published a status",
        "no consumer group",
        "1 dead letters",
    ]
