#!lua
-- A RELIST_END, step 4 (see relist.lua): delete, at list_rv L, the candidates a
-- scan found (members of the scope the list did not hold) that are still indexed
-- and older than L (newer ones were written after the list: kept), then move the
-- record's cursor from `cursor` to `next_cursor` (not when it is "": a part of the
-- scan's candidates, the rest to follow). The last chunk (next_cursor "0")
-- ends the relist: the record's rv is L, the sweep's set becomes the listed set,
-- the entry is acked. Returns {deleted, drifted (1: a counter went below zero),
-- ended (1: acked)}; 'moved' when the cursor is no longer `cursor` (another
-- consumer swept this chunk: scan again); 'retry' when a candidate's index record
-- changed since the scan (the index sets declared would be the wrong ones).
--
-- Every key it touches is in KEYS: the fixed ones, then each candidate's state and
-- tombstone keys, then the index sets the candidates' records name (checked up
-- front; the scan read the records, and the call refuses if they changed since).
--
-- One call is atomic and moves the cursor with its deletes: a consumer killed
-- between chunks never deletes (nor counts) a member twice, and the next to run
-- the entry resumes at the cursor.
--
-- A purge (the resource is no longer served: the record's purge "1") deletes the
-- same objects but leaves no tombstone and, at the end, no relist record: the
-- resource may come back with these very objects at their old resourceVersions (a
-- 404 the API server answered for a while), and nothing may then reject them.
--
-- The KEYS and ARGV layouts are the two `unpack` lines below (the candidates'
-- keys follow the named KEYS; their members, then their records, "+" and the
-- values or "-" for none, follow the named ARGV); projector/scripts.py declares the
-- same names in the same order (tests/unit/test_contracts.py).

local relist, relist_members, sweep, kind_index, counts, records, changes,
  stream = unpack(KEYS, 1, 8)
local list_rv, cursor, next_cursor, tombstone_ttl, changes_maxlen, by_prefix, fields,
  mode, group, entry_id = unpack(ARGV, 1, 10)
local FIRST_KEY, FIRST_MEMBER = 9, 11
local n = (#ARGV - FIRST_MEMBER + 1) / 2

local ack = acker(mode, stream, group, entry_id)
if not still_pending(mode, stream, group, entry_id) then return 'not-pending' end

local at = redis.call('HMGET', relist, 'sweeping', 'cursor', 'purge', 'listed')
if at[1] ~= list_rv then
  -- The sweep at L ended: another consumer finished it (a redelivered or duplicate
  -- entry), or a newer list's sweep began, which deletes all this one would.
  ack()
  return {0, 0, 1}
end
if at[2] ~= cursor then return 'moved' end
-- The sweep's set lost members since the scan: scan again (which says 'lost').
if redis.call('SCARD', sweep) ~= tonumber(at[4]) then return 'moved' end
local purge = at[3] == '1'

local members, recorded = {}, {}
for i = 1, n do
  local member, passed = ARGV[FIRST_MEMBER + i - 1], ARGV[FIRST_MEMBER + n + i - 1]
  local was = passed ~= '-' and string.sub(passed, 2) or false
  local now = fields ~= '' and redis.call('HGET', records, member) or false
  if now ~= was then return 'retry' end
  members[i], recorded[i] = member, was
end
if fields ~= '' then
  local declared = {}
  for i = FIRST_KEY + 2 * n, #KEYS do declared[KEYS[i]] = true end
  local names = split(fields)
  for i = 1, n do
    local values = recorded[i] and split(recorded[i]) or {}
    for j, name in ipairs(names) do
      local key = by_prefix .. name .. ':' .. (values[j] or '')
      if (values[j] or '') ~= '' and not declared[key] then
        return redis.error_reply('ERR relist_sweep.lua: undeclared key ' .. key)
      end
    end
  end
end

local no = refused({
  {'HINCRBY', counts, list_rv, '1'}, {'HDEL', counts, list_rv}, {'HDEL', records, list_rv},
  {'DEL', KEYS[FIRST_KEY] or relist}, {'SREM', kind_index, list_rv},
  {'HSET', relist, 'rv', list_rv}, {'DEL', relist}, {'RENAME', sweep, relist_members},
  {'XADD', changes, '*', 'key', list_rv, 'type', 'DELETED', 'rv', list_rv, 'phase', ''}})
if no then return no end

local deleted, drifted = 0, false
if n > 0 then
  local indexed = redis.call('SMISMEMBER', kind_index, unpack(members))
  local listed = redis.call('SMISMEMBER', sweep, unpack(members))
  for i, member in ipairs(members) do
    local state_key, tomb_key = KEYS[FIRST_KEY + 2 * i - 2], KEYS[FIRST_KEY + 2 * i - 1]
    local stored = redis.call('HGET', state_key, 'rv')
    if indexed[i] == 1 and listed[i] == 0 and (not stored or newer(list_rv, stored)) then
      local tomb = redis.call('GET', tomb_key)
      if not purge and (not tomb or newer(list_rv, tomb)) then
        redis.call('SET', tomb_key, list_rv, 'EX', tombstone_ttl)
      end
      if reindex(member, recorded[i], false, fields, by_prefix, counts, records) then
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
drifted = drifted and 1 or 0

if next_cursor == '' then return {deleted, drifted, 0} end
if next_cursor ~= '0' then
  redis.call('HSET', relist, 'cursor', next_cursor)
  return {deleted, drifted, 0}
end
local done = redis.call('HGET', relist, 'rv')
if purge then
  redis.call('UNLINK', relist_members, sweep)
  redis.call('DEL', relist)
elseif done and not newer(list_rv, done) then
  -- A relist at L or newer was recorded without this sweep seeing it (a projector
  -- of the one-call relist.lua, during an upgrade): its record and list stay; a
  -- record's rv never goes back.
  redis.call('UNLINK', sweep)
  redis.call('HDEL', relist, 'sweeping', 'cursor', 'purge', 'scanner', 'listed')
else
  -- UNLINK: the previous listed set (as large as the scope) is freed off the main
  -- thread, as RENAME onto it would not.
  redis.call('UNLINK', relist_members)
  if redis.call('EXISTS', sweep) == 1 then redis.call('RENAME', sweep, relist_members) end
  redis.call('HDEL', relist, 'sweeping', 'cursor', 'purge', 'scanner', 'listed')
  redis.call('HSET', relist, 'rv', list_rv)
end
ack()
return {deleted, drifted, 1}
