"""Benchmark peer: a kopf operator writing the same keys as kube2redis.

    kopf run --standalone --namespace NS bench/peers/kopf_peer.py

REDIS_URL names the Redis; the write is the same compare-and-set Lua as the
Go peer's (hash, index, tombstone, change feed).
"""

import json
import os
from typing import Any

import kopf
import redis.asyncio as aioredis

APPLY = """
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local typ, rv = ARGV[1], ARGV[2]
local stored = redis.call('HGET', KEYS[1], 'rv')
if stored and ((typ == 'DELETED' and newer(stored, rv)) or
               (typ ~= 'DELETED' and not newer(rv, stored))) then
  return 'stale'
end
local tomb = redis.call('GET', KEYS[3])
if tomb and not newer(rv, tomb) then return 'tombstoned' end
if typ == 'DELETED' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[4])
  redis.call('SET', KEYS[3], rv, 'EX', 604800)
else
  redis.call('HSET', KEYS[1], 'object', ARGV[3], 'rv', rv)
  redis.call('SADD', KEYS[2], ARGV[4])
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'key', KEYS[1], 'type', typ,
           'rv', rv, 'phase', '')
return 'applied'
"""

client = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
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
