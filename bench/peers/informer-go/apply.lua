-- The peers' write, shared by informer-go and kopf_peer.py: what projector/apply.lua
-- does for one object (rv compare, hash + index, tombstone, change feed),
-- without kube2redis's relist bookkeeping, which the peers do not have.
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local typ, rv = ARGV[1], ARGV[2]
local stored = redis.call('HGET', KEYS[1], 'rv')
if stored and ((typ == 'DELETED' and newer(stored, rv)) or (typ ~= 'DELETED' and not newer(rv, stored))) then
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
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'key', KEYS[1], 'type', typ, 'rv', rv, 'phase', '')
return 'applied'
