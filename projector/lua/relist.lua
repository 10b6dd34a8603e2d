#!lua
-- Apply a RELIST_END marker: remember which objects the list at rv L held,
-- and delete (at L) every stored object in the scope that it did not hold and
-- that is older than L. Newer objects were created after the list: kept.
-- Returns how many objects it deleted.
--
-- The KEYS and ARGV layouts are the two `unpack` lines below (the listed
-- members follow the named ARGV); projector/scripts.py declares the same names
-- in the same order (tests/unit/test_contracts.py).
--   scope: the namespace ("" = all namespaces); state_prefix/tombstone_prefix:
--   the kind's key prefixes, a member appended makes the key; purge "1": the
--   resource is no longer served; by_prefix and fields: the kind's index sets'
--   prefix and indexed field names, whose sets and counters a deleted object
--   leaves as its record (KEYS records) says (see reindex in shared.lua); mode
--   "ack" or "replay" (see shared.lua). Answers 'index-drift' instead of the count
--   when a counter went below zero.
--
-- The relist record's rv is written last: a call Redis stops midway is applied
-- again by its resend (a sweep already done is not repeated: what it deleted is
-- no longer in the index).
--
-- A purge deletes the same objects but leaves no tombstone and no relist record:
-- the resource may come back with these very objects at their old
-- resourceVersions (a 404 the API server answered for a while), and nothing may
-- then reject them.

local kind_index, counts, records, relist, relist_members, changes, stream = unpack(KEYS)
local list_rv, scope, state_prefix, tombstone_prefix, tombstone_ttl, changes_maxlen,
  by_prefix, fields, mode, group, entry_id, purge = unpack(ARGV, 1, 12)
local FIRST_MEMBER = 13

local ack = acker(mode, stream, group, entry_id)
if not still_pending(mode, stream, group, entry_id) then return 'not-pending' end

local previous = redis.call('HGET', relist, 'rv')
if previous and not newer(list_rv, previous) then
  ack()
  return 0
end

local no = refused({
  {'HINCRBY', counts, list_rv, '1'}, {'HDEL', counts, list_rv}, {'HDEL', records, list_rv},
  {'DEL', state_prefix}, {'SREM', kind_index, list_rv}, {'HSET', relist, 'rv', list_rv},
  {'DEL', relist},
  {'XADD', changes, '*', 'key', state_prefix, 'type', 'DELETED', 'rv', list_rv, 'phase', ''}})
if no then return no end

purge = purge == '1'
-- UNLINK: the previous listed set (as large as the scope) is freed off the main thread.
redis.call('UNLINK', relist_members)
local n = #ARGV
for i = FIRST_MEMBER, n, 4000 do
  redis.call('SADD', relist_members, unpack(ARGV, i, math.min(i + 3999, n)))
end

local prefix = scope .. ':'
local deleted, drifted = 0, false
-- SDIFF, in C, yields only what the list did not hold (usually few): asking the
-- listed set about each indexed member from Lua took ~40 % of the call's time.
for _, member in ipairs(redis.call('SDIFF', kind_index, relist_members)) do
  local in_scope = scope == '' or string.sub(member, 1, #prefix) == prefix
  if in_scope then
    local state_key = state_prefix .. member
    local stored = redis.call('HGET', state_key, 'rv')
    if not stored or newer(list_rv, stored) then
      local tomb_key = tombstone_prefix .. member
      local tomb = redis.call('GET', tomb_key)
      if not purge and (not tomb or newer(list_rv, tomb)) then
        redis.call('SET', tomb_key, list_rv, 'EX', tombstone_ttl)
      end
      local recorded = fields ~= '' and redis.call('HGET', records, member)
      if reindex(member, recorded, false, fields, by_prefix, counts, records) then
        drifted = true
      end
      redis.call('XADD', changes, 'MAXLEN', '~', changes_maxlen, '*',
        'key', state_key, 'type', 'DELETED', 'rv', list_rv, 'phase', '')
      redis.call('DEL', state_key)
      redis.call('SREM', kind_index, member)
      deleted = deleted + 1
    end
  end
end
if purge then
  redis.call('DEL', relist)
else
  redis.call('HSET', relist, 'rv', list_rv)
end
ack()
if drifted then return 'index-drift' end
return deleted
