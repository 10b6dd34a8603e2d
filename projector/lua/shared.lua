-- Shared by apply.lua and relist.lua: put in front of each when it is loaded
-- (projector/scripts.py), so these rules are written once.

-- resourceVersions compare as KEP-5504 says: longer is newer, equal length
-- compares as text. The caller has validated them.
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

-- mode is "ack" (a consumer of the group: only an entry still pending applies,
-- and its XACK is part of the same call) or "replay" (no group is touched).
local function acker(mode, stream, group, entry_id)
  if mode ~= 'ack' then return function() end end
  return function() redis.call('XACK', stream, group, entry_id) end
end

-- Only an entry still pending in the group applies. One that is not was applied
-- by another consumer, or belongs to a stream that was reset (Redis restarted
-- empty, the mirror wiped for another cluster): applying it late could bring back
-- what the reset removed.
local function still_pending(mode, stream, group, entry_id)
  if mode ~= 'ack' then return true end
  local entry = redis.pcall('XPENDING', stream, group, entry_id, entry_id, 1)
  return not entry.err and #entry > 0
end

-- Redis checks a command against the ACL only when a script reaches it, after
-- what came before was written; a resend after such a refusal would then repeat
-- the counters' moves. So the commands whose repeat is not harmless are checked
-- before any write: an ACL without one refuses the whole call (README lists them).
local function refused(checks)
  for _, check in ipairs(checks) do
    if not redis.acl_check_cmd(unpack(check)) then
      return redis.error_reply('NOPERM this user has no permissions to run the '
        .. check[1] .. ' command on ' .. check[2] .. ' (kube2redis needs it: see README)')
    end
  end
  return false
end

-- The secondary indexes (common/indexes.py). `fields` names a kind's indexed
-- fields ("" = none), `old` and `new` its values, each '/'-joined in the same
-- order; false: not indexed (not stored, stored before indexes existed, or no
-- longer). `old` is always read from the kind's record hash (`records`, member ->
-- values), never from the state hash, which can be lost on its own. A set per
-- non-empty value of each field, and a counter per combination of values, moved
-- only where a value changed; the record is updated after the counters, so a
-- call cut short before it moves them again from the same `old` (the sets are
-- idempotent). Returns true when a counter went below zero: the counters had
-- drifted (lost, or a partial write); left negative for verify to see, not hidden.
local function split(joined)
  local out, start = {}, 1
  while true do
    local at = string.find(joined, '/', start, true)
    if not at then
      out[#out + 1] = string.sub(joined, start)
      return out
    end
    out[#out + 1] = string.sub(joined, start, at - 1)
    start = at + 1
  end
end

local function reindex(member, old, new, fields, by_prefix, counts, records)
  if fields == '' or old == new then return false end
  local names = split(fields)
  local was = old and split(old) or {}
  local now = new and split(new) or {}
  for i, name in ipairs(names) do
    local before, after = was[i] or '', now[i] or ''
    if before ~= after or not old or not new then
      if old and before ~= '' then redis.call('SREM', by_prefix .. name .. ':' .. before, member) end
      if new and after ~= '' then redis.call('SADD', by_prefix .. name .. ':' .. after, member) end
    end
  end
  local drifted = false
  if old then
    local left = redis.call('HINCRBY', counts, old, -1)
    if left == 0 then redis.call('HDEL', counts, old) elseif left < 0 then drifted = true end
  end
  if new then
    if redis.call('HINCRBY', counts, new, 1) <= 0 then drifted = true end
    redis.call('HSET', records, member, new)
  else
    redis.call('HDEL', records, member)
  end
  return drifted
end
