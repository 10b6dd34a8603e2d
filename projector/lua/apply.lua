#!lua
-- The one place where object state changes. Atomic: state hash, index member,
-- tombstone, change-feed entry and the XACK of the stream entry happen together,
-- so a projector that dies can leave an entry pending but never half-applied.
--
-- KEYS: 1 state hash, 2 index set, 3 tombstone, 4 change feed stream,
--       5/6 relist hash/members of the object's namespace scope,
--       7/8 relist hash/members of the all-namespaces scope, 9 event stream
-- ARGV: 1 type, 2 rv, 3 object, 4 index member, 5 tombstone ttl (s),
--       6 phase, 7 change feed maxlen, 8 uid, 9 group ("" = no ack), 10 entry id
--
-- resourceVersions compare as KEP-5504 says: longer is newer, equal length
-- compares as text. The caller has validated them.
--
-- The "#!lua" line makes Redis refuse the whole call up front when it refuses
-- writes (OOM, READONLY, MISCONF): never half an apply, whatever the cause.

local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

local function ack()
  if ARGV[9] ~= '' then redis.call('XACK', KEYS[9], ARGV[9], ARGV[10]) end
end

-- Only an entry still pending in the group applies. One that is not was applied
-- by another consumer, or belongs to a stream that was reset (Redis restarted
-- empty, the mirror wiped for another cluster): applying it late could bring back
-- what the reset removed.
if ARGV[9] ~= '' then
  local entry = redis.pcall('XPENDING', KEYS[9], ARGV[9], ARGV[10], ARGV[10], 1)
  if entry.err or #entry == 0 then return 'not-pending' end
end

local typ, rv, member = ARGV[1], ARGV[2], ARGV[4]
local stored = redis.call('HGET', KEYS[1], 'rv')
if stored then
  -- A delete removes the object only if it is not older than what we hold.
  if (typ == 'DELETED' and newer(stored, rv)) or (typ ~= 'DELETED' and not newer(rv, stored)) then
    -- The object is here: so is its index member (it may have been lost apart
    -- from the hash, e.g. by a clear racing an apply); a relist re-adds it.
    if typ ~= 'DELETED' then redis.call('SADD', KEYS[2], member) end
    ack()
    return 'stale'
  end
end

local tomb = redis.call('GET', KEYS[3])
if tomb and not newer(rv, tomb) then
  ack()
  return 'tombstoned'
end

if typ ~= 'DELETED' then
  -- A relist at rv L that did not list this object proves it did not exist at L:
  -- an event older than L must not bring it back, whoever delivers it late.
  for i = 5, 7, 2 do
    local listed_at = redis.call('HGET', KEYS[i], 'rv')
    if listed_at and newer(listed_at, rv) and redis.call('SISMEMBER', KEYS[i + 1], member) == 0 then
      ack()
      return 'relisted'
    end
  end
end

if typ == 'DELETED' then
  local existed = redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], member)
  redis.call('SET', KEYS[3], rv, 'EX', ARGV[5])
  ack()
  if existed == 0 then return 'tombstone' end
else
  redis.call('HSET', KEYS[1], 'object', ARGV[3], 'rv', rv, 'uid', ARGV[8])
  redis.call('SADD', KEYS[2], member)
  if tomb then redis.call('DEL', KEYS[3]) end
  ack()
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*',
  'key', KEYS[1], 'type', typ, 'rv', rv, 'phase', ARGV[6])
return 'applied'
