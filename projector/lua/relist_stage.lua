#!lua
-- A RELIST_END, step 1 (projector/scripts.py relist_end): add a chunk of the
-- listed members to the list's staging set. Only a set nobody reads is written,
-- so a chunk repeated (a resend, a redelivery, a duplicate entry of the same
-- list) or cut short changes nothing but that set; relist.lua starts the sweep
-- only once the set holds the whole list (it counts it).
--
-- The staging set expires after tombstone_ttl seconds (renewed by each chunk): a
-- relist whose entry was dead-lettered midway leaves nothing behind for good.
-- relist.lua takes the expiry off when it makes the set the sweep's.
--
-- The KEYS and ARGV layouts are the two `unpack` lines below (the members follow
-- the named ARGV); projector/scripts.py declares the same names in the same order
-- (tests/unit/test_contracts.py).

local staging, stream, relist, sweep = unpack(KEYS)
local tombstone_ttl, mode, group, entry_id, list_rv = unpack(ARGV, 1, 5)
local FIRST_MEMBER = 6

if not still_pending(mode, stream, group, entry_id) then return 'not-pending' end
-- Nothing to stage when the list needs no staging any more (a consumer that went
-- stale while another took the entry over, began and finished the sweep): a set
-- staged now would outlive the entry, as large as the list, until it expired.
local at = redis.call('HMGET', relist, 'rv', 'sweeping', 'listed')
local done, sweeping = at[1], at[2]
if (done and not newer(list_rv, done)) or (sweeping and newer(sweeping, list_rv))
  or (sweeping == list_rv and redis.call('SCARD', sweep) == tonumber(at[3])) then
  return 'staged'
end
if #ARGV >= FIRST_MEMBER then
  redis.call('SADD', staging, unpack(ARGV, FIRST_MEMBER, #ARGV))
  redis.call('EXPIRE', staging, tombstone_ttl)
end
return 'staged'
