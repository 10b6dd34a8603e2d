#!lua
-- A RELIST_END, step 2 (projector/scripts.py relist_end): start the sweep of
-- the list at rv L, resume it, or find it done. A list of 100,000 members took one
-- call of ~130 ms when the whole relist was one script (SADD of every member, SDIFF,
-- the sweep); now no call holds Redis longer than a chunk's work:
--   1. relist_stage.lua: the members, a chunk per call, into the staging set;
--   2. this script: the staging set becomes the sweep's set (RENAME: O(1)) and the
--      record says `sweeping` L. From this call on apply.lua rejects an event older
--      than L for an object the list did not hold, so nothing can slip into the
--      index behind the sweep's cursor;
--   3. relist_scan.lua: SSCAN the kind's index from the recorded cursor, a chunk per
--      call; what the list held (SMISMEMBER) goes on, the rest is a candidate;
--   4. relist_sweep.lua: delete the candidates older than L, with every key they
--      touch declared, and move the cursor; the last chunk writes the record's rv,
--      the listed set and the XACK.
-- Every step reads where the sweep is from the record, in Redis: a consumer killed
-- between steps leaves the entry pending, and whoever gets it (redelivery, reclaim,
-- a duplicate entry of the same list) stages again and resumes at the cursor.
--
-- Answers: 0 (and the XACK) when the list is obsolete: a relist at L or newer is
-- recorded, or a newer list's sweep has begun (it deletes everything this one
-- would: an object this list did not hold but a newer one does was written after
-- L, and its SYNC brings it up to date); 'stage' when the staging set does not hold
-- `staged` members (the whole list, deduplicated); 'sweeping' when the sweep at L
-- runs (begun now, or resumed).
--
-- The record's fields: rv (the newest relist done), sweeping (the list whose sweep
-- is in progress), cursor (where its SSCAN is), scanner (the run_id of the Redis
-- process that gave the cursor: see relist_scan.lua), listed (how many members the
-- sweep's set holds: one that holds fewer lost them, see below), purge ("1": the
-- resource is gone).
--
-- The KEYS and ARGV layouts are the two `unpack` lines below; projector/scripts.py
-- declares the same names in the same order (tests/unit/test_contracts.py).
--   staged: how many distinct members the list holds. purge "1": the resource is no
--   longer served (no tombstones, no record at the end; see relist_sweep.lua). The
--   other keys and ARGV are relist_sweep.lua's, only checked here against the ACL.

local relist, staging, sweep, relist_members, kind_index, counts, records, changes,
  stream = unpack(KEYS)
local list_rv, staged, purge, mode, group, entry_id = unpack(ARGV)

local ack = acker(mode, stream, group, entry_id)
if not still_pending(mode, stream, group, entry_id) then
  redis.call('UNLINK', staging)  -- staged by this entry's consumer: nobody needs it
  return 'not-pending'
end

local at = redis.call('HMGET', relist, 'rv', 'sweeping')
local done, sweeping = at[1], at[2]
if (done and not newer(list_rv, done)) or (sweeping and newer(sweeping, list_rv)) then
  redis.call('UNLINK', staging)
  ack()
  return 0
end
if sweeping == list_rv and redis.call('SCARD', sweep) == tonumber(staged) then
  -- Resumed: the sweep's set is the whole list already; a staging set made again
  -- (a redelivery stages before it asks) is not needed.
  redis.call('UNLINK', staging)
  return 'sweeping'
end
-- Not begun, or begun and the sweep's set lost members (evicted, or a Redis that
-- lost it): the sweep (re)starts from the list staged anew, `sweeping` kept as it
-- is meanwhile, so neither apply.lua nor another consumer of this entry takes the
-- sweep for ended. A set that lost members would make every member it lost look
-- unlisted, and the sweep delete it for good.
if redis.call('SCARD', staging) ~= tonumber(staged) then return 'stage' end

-- Every command of the sweep is checked before the first write, so an ACL without
-- one refuses the relist here, before the record says it is sweeping.
local no = refused({
  {'UNLINK', sweep}, {'RENAME', staging, sweep}, {'PERSIST', sweep},
  {'HSET', relist, 'sweeping', list_rv}, {'HDEL', relist, 'sweeping'}, {'DEL', relist},
  {'SSCAN', kind_index, '0'}, {'SMISMEMBER', sweep, list_rv}, {'SCARD', sweep},
  {'INFO', 'server'},
  {'HINCRBY', counts, list_rv, '1'}, {'HDEL', counts, list_rv}, {'HDEL', records, list_rv},
  {'SREM', kind_index, list_rv}, {'RENAME', sweep, relist_members},
  {'XADD', changes, '*', 'key', list_rv, 'type', 'DELETED', 'rv', list_rv, 'phase', ''}})
if no then return no end

-- A sweep of an older list in progress is superseded: its set goes (its consumer's
-- next step finds `sweeping` changed and stops).
redis.call('UNLINK', sweep)
if tonumber(staged) > 0 then
  redis.call('RENAME', staging, sweep)
  redis.call('PERSIST', sweep)
end
redis.call('HDEL', relist, 'scanner')
redis.call('HSET', relist, 'sweeping', list_rv, 'cursor', '0', 'purge', purge, 'listed', staged)
return 'sweeping'
