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
