"""Benchmark peer: a kopf operator writing the same keys as kube2redis.

    kopf run --standalone --namespace NS bench/peers/kopf_peer.py

REDIS_URL names the Redis; the write is the Go peer's compare-and-set Lua
(informer-go/apply.lua: hash, index, tombstone, change feed).
"""

import json
import os
from pathlib import Path
from typing import Any

import kopf
import redis.asyncio as aioredis

APPLY = (Path(__file__).parent / "informer-go" / "apply.lua").read_text()

# kopf runs each event's handler as its own task: a burst opens many at once. A
# blocking pool makes them wait for a connection instead of failing the handler
# ("Too many connections"), which would lose the event.
client = aioredis.Redis(
    connection_pool=aioredis.BlockingConnectionPool.from_url(
        os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), max_connections=64, timeout=60
    )
)
script = client.register_script(APPLY)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # no Kubernetes Events: we only mirror
    settings.watching.server_timeout = 300


@kopf.on.event("batch.volcano.sh", "v1alpha1", "jobs")  # type: ignore[arg-type]
async def mirror(event: dict[str, Any], **_: Any) -> None:
    kind = event.get("type") or "ADDED"  # kopf's initial listing has type None
    body = event["object"]
    meta = body["metadata"]
    member = f"{meta['namespace']}:{meta['name']}"
    keys = [f"k8s:job:{member}", "k8s:index:job", f"k8s:tombstone:job:{member}", "k8s:changes"]
    await script(keys=keys, args=[kind, meta["resourceVersion"], json.dumps(body), member])
