#!lua
-- Apply a RELIST_END marker: remember which objects the list at rv L held,
-- and delete (at L) every stored object in the scope that it did not hold and
-- that is older than L. Newer objects were created after the list: kept.
--
-- KEYS: 1 index set, 2 relist hash, 3 relist members set, 4 change feed,
--       5 event stream
-- ARGV: 1 list rv, 2 namespace scope ("" = all), 3 state key prefix,
--       4 tombstone key prefix, 5 tombstone ttl, 6 change feed maxlen,
--       7 group ("" = no ack), 8 entry id, 9 purge ("1": the resource is no
--       longer served), 10.. listed members
--
-- A purge deletes the same objects but leaves no tombstone and no relist record:
-- the resource may come back with these very objects at their old
-- resourceVersions (a 404 the API server answered for a while), and nothing may
-- then reject them.

local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

local function ack()
  if ARGV[7] ~= '' then redis.call('XACK', KEYS[5], ARGV[7], ARGV[8]) end
end

-- As in apply.lua: only an entry still pending in the group applies.
if ARGV[7] ~= '' then
  local entry = redis.pcall('XPENDING', KEYS[5], ARGV[7], ARGV[8], ARGV[8], 1)
  if entry.err or #entry == 0 then return 'not-pending' end
end

local list_rv, scope = ARGV[1], ARGV[2]
local previous = redis.call('HGET', KEYS[2], 'rv')
if previous and not newer(list_rv, previous) then
  ack()
  return 0
end

local purge = ARGV[9] == '1'
-- UNLINK: the previous listed set (as large as the scope) is freed off the main thread.
redis.call('UNLINK', KEYS[3])
local n = #ARGV
for i = 10, n, 4000 do
  redis.call('SADD', KEYS[3], unpack(ARGV, i, math.min(i + 3999, n)))
end
if purge then
  redis.call('DEL', KEYS[2])
else
  redis.call('HSET', KEYS[2], 'rv', list_rv)
end

local prefix = scope .. ':'
local deleted = 0
-- SDIFF, in C, yields only what the list did not hold (usually few): asking the
-- listed set about each indexed member from Lua took ~40 % of the call's time.
for _, member in ipairs(redis.call('SDIFF', KEYS[1], KEYS[3])) do
  local in_scope = scope == '' or string.sub(member, 1, #prefix) == prefix
  if in_scope then
    local state_key = ARGV[3] .. member
    local stored = redis.call('HGET', state_key, 'rv')
    if not stored or newer(list_rv, stored) then
      redis.call('DEL', state_key)
      redis.call('SREM', KEYS[1], member)
      local tomb_key = ARGV[4] .. member
      local tomb = redis.call('GET', tomb_key)
      if not purge and (not tomb or newer(list_rv, tomb)) then
        redis.call('SET', tomb_key, list_rv, 'EX', ARGV[5])
      end
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*',
        'key', state_key, 'type', 'DELETED', 'rv', list_rv, 'phase', '')
      deleted = deleted + 1
    end
  end
end
ack()
return deleted
