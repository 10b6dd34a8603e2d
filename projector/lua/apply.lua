#!lua
-- The one place where object state changes. Atomic: state hash, index member,
-- secondary indexes and counters, tombstone, change-feed entry and the XACK of the
-- stream entry happen together,
-- so a projector that dies can leave an entry pending but never half-applied.
-- Returns the outcome's name (common/records.py Outcome).
--
-- The state hash's rv is written last, then the XACK: a call that Redis stops
-- midway (a command the ACL refuses, caught up front where a repeat would count
-- twice: `refused` in shared.lua) leaves the object older than the event, so the
-- resend applies it all again rather than calling it stale.
--
-- The "#!lua" line makes Redis refuse the whole call up front when it refuses
-- writes (OOM, READONLY, MISCONF): never half an apply, whatever the cause.
--
-- The KEYS and ARGV layouts are the two `unpack` lines below; projector/scripts.py
-- declares the same names in the same order (tests/unit/test_contracts.py).
--   relist_ns*, relist_all*: the relist record, listed members and the members of
--   the list being swept (relist.lua) of the object's namespace scope and of the
--   all-namespaces scope. The index sets of the object's new values follow the named
--   KEYS (checked up front). The sets of its old values are named by its index
--   record, which only Redis holds: those SREMs (reindex in shared.lua) touch keys
--   the call cannot declare. On Redis Cluster every key of a mirror shares the
--   prefix's hash tag, so they are in the slot of the declared ones.
--   records: the kind's hash of member -> indexed values (what its index sets
--   and counters hold for it). tombstone_ttl in seconds; phase "" if the object
--   has none; by_prefix, fields and indexed: the kind's index sets' prefix, its
--   indexed field names and this object's values (see reindex in shared.lua);
--   mode "ack" or "replay" (see shared.lua).

local state, kind_index, counts, records, tombstone, changes, relist_ns, relist_ns_members,
  relist_ns_sweep, relist_all, relist_all_members, relist_all_sweep, stream = unpack(KEYS, 1, 13)
local typ, rv, object, member, tombstone_ttl, phase, changes_maxlen, uid,
  by_prefix, fields, indexed, mode, group, entry_id = unpack(ARGV)
local FIRST_BY_SET = 14

if typ ~= 'DELETED' and fields ~= '' then
  local declared = {}
  for i = FIRST_BY_SET, #KEYS do declared[KEYS[i]] = true end
  local values = split(indexed)
  for j, name in ipairs(split(fields)) do
    local key = by_prefix .. name .. ':' .. (values[j] or '')
    if (values[j] or '') ~= '' and not declared[key] then
      return redis.error_reply('ERR apply.lua: undeclared key ' .. key)
    end
  end
end

local ack = acker(mode, stream, group, entry_id)
if not still_pending(mode, stream, group, entry_id) then return 'not-pending' end

local function refusal()
  return refused({
    {'HINCRBY', counts, indexed, '1'}, {'HDEL', counts, indexed},
    {'HSET', records, member, indexed}, {'HDEL', records, member},
    {'HSET', state, 'rv', rv}, {'DEL', state},
    {'XADD', changes, '*', 'key', state, 'type', typ, 'rv', rv, 'phase', phase}})
end

local function record_change()
  redis.call('XADD', changes, 'MAXLEN', '~', changes_maxlen, '*',
    'key', state, 'type', typ, 'rv', rv, 'phase', phase)
end

local stored = redis.call('HGET', state, 'rv')
local recorded = fields ~= '' and redis.call('HGET', records, member)
if stored then
  -- A delete removes the object only if it is not older than what we hold.
  if (typ == 'DELETED' and newer(stored, rv)) or (typ ~= 'DELETED' and not newer(rv, stored)) then
    -- The object is here: so is its index member (it may have been lost apart
    -- from the hash, e.g. by a clear racing an apply); a relist re-adds it.
    if typ ~= 'DELETED' then
      redis.call('SADD', kind_index, member)
      -- The same version (a relist's SYNC) indexed otherwise than its values say:
      -- stored before indexes existed, or its record drifted. Index it as it is,
      -- and say so on the change feed, or a follower of its phase never learns.
      if stored == rv and fields ~= '' and recorded ~= indexed then
        local no = refusal()
        if no then return no end
        local drifted = reindex(member, recorded, indexed, fields, by_prefix, counts, records)
        record_change()
        ack()
        if drifted then return 'index-drift' end
        return 'reindexed'
      end
    end
    ack()
    return 'stale'
  end
end

local tomb = redis.call('GET', tombstone)
if tomb and not newer(rv, tomb) then
  ack()
  return 'tombstoned'
end

if typ ~= 'DELETED' then
  -- A relist at rv L that did not list this object proves it did not exist at L:
  -- an event older than L must not bring it back, whoever delivers it late.
  -- From the moment a relist's sweep begins (relist.lua), its list is whole and the
  -- same rule holds for it: what the sweep's cursor has passed must stay swept. Not
  -- for a purge, which leaves nothing behind to reject with either.
  local scopes = {{relist_ns, relist_ns_members, relist_ns_sweep},
    {relist_all, relist_all_members, relist_all_sweep}}
  for _, relist in ipairs(scopes) do
    local at = redis.call('HMGET', relist[1], 'rv', 'sweeping', 'purge')
    local listed_at, sweeping = at[1], at[3] ~= '1' and at[2]
    if (listed_at and newer(listed_at, rv) and redis.call('SISMEMBER', relist[2], member) == 0)
      or (sweeping and newer(sweeping, rv) and redis.call('SISMEMBER', relist[3], member) == 0)
    then
      ack()
      return 'relisted'
    end
  end
end

local no = refusal()
if no then return no end
local drifted
if typ == 'DELETED' then
  drifted = reindex(member, recorded, false, fields, by_prefix, counts, records)
  redis.call('SET', tombstone, rv, 'EX', tombstone_ttl)
  if not stored then
    redis.call('SREM', kind_index, member)
    ack()
    if drifted then return 'index-drift' end
    return 'tombstone'
  end
  record_change()
  redis.call('SREM', kind_index, member)
  redis.call('DEL', state)
else
  drifted = reindex(member, recorded, indexed, fields, by_prefix, counts, records)
  redis.call('SADD', kind_index, member)
  if tomb then redis.call('DEL', tombstone) end
  record_change()
  redis.call('HSET', state, 'object', object, 'uid', uid, 'rv', rv)
end
ack()
if drifted then return 'index-drift' end
return 'applied'
