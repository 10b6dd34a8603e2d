#!lua
-- A RELIST_END, step 3 (see relist.lua): one chunk of the sweep's SSCAN of the
-- kind's index, from the cursor the record holds. Answers {'ended'} when the sweep
-- at list_rv is no longer in progress; {'found', cursor, next, candidates,
-- recorded} when members of the scope in this chunk are not in the list (their
-- index records, false for none, so relist_sweep.lua can be given the index sets
-- they name as KEYS); else {'scanned', cursor, next}, having moved the cursor on
-- itself when it is not the last chunk (most chunks: a relist usually lists all).
--
-- SSCAN returns every member present from the first chunk to the last; one added
-- meanwhile may be missed, which is safe: apply.lua rejects what is older than the
-- list for a member it did not hold from the moment the sweep began.
--
-- A cursor means something only to the Redis process that gave it (each process
-- lays its sets out with a hash seed of its own): after a restart from disk or a
-- failover to a replica, the same cursor would skip members never scanned. So the
-- record keeps the run_id of the process that gave the cursor, and a scan on
-- another process starts again from 0 (deleting is idempotent: a second pass only
-- costs time). Answers {'lost'} when the sweep's set holds fewer members than the
-- list (relist.lua then restarts the sweep from the list staged anew).
--
-- The KEYS and ARGV layouts are the two `unpack` lines below; projector/scripts.py
-- declares the same names in the same order (tests/unit/test_contracts.py).
--   scope: the namespace ("" = all namespaces); fields: the kind's indexed field
--   names ("" = none); scan_count: SSCAN's COUNT.

local relist, kind_index, sweep, records = unpack(KEYS)
local list_rv, scope, fields, scan_count = unpack(ARGV)

local at = redis.call('HMGET', relist, 'sweeping', 'cursor', 'scanner', 'listed')
if at[1] ~= list_rv then return {'ended'} end
if redis.call('SCARD', sweep) ~= tonumber(at[4]) then return {'lost'} end
local cursor = at[2]
local server = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if at[3] ~= server then
  cursor = '0'
  redis.call('HSET', relist, 'cursor', cursor, 'scanner', server)
end
local scanned = redis.call('SSCAN', kind_index, cursor, 'COUNT', scan_count)
local next_cursor, found = scanned[1], scanned[2]

local in_scope = found
if scope ~= '' then
  local prefix = scope .. ':'
  in_scope = {}
  for _, member in ipairs(found) do
    if string.sub(member, 1, #prefix) == prefix then in_scope[#in_scope + 1] = member end
  end
end
local candidates = {}
if #in_scope > 0 then
  local listed = redis.call('SMISMEMBER', sweep, unpack(in_scope))
  for i, member in ipairs(in_scope) do
    if listed[i] == 0 then candidates[#candidates + 1] = member end
  end
end
if #candidates > 0 then
  local recorded = {}
  if fields ~= '' then recorded = redis.call('HMGET', records, unpack(candidates)) end
  return {'found', cursor, next_cursor, candidates, recorded}
end
if next_cursor ~= '0' then redis.call('HSET', relist, 'cursor', next_cursor) end
return {'scanned', cursor, next_cursor}
