-- The watcher's guard against a Redis that forgot: runs in the same MULTI/EXEC as
-- the stream entries it covers. Every append bumps a per-scope mark that only ever
-- counts up; a mark lower than the watcher last wrote (or gone) means Redis lost
-- writes (a restart without persistence, an older snapshot, a failover to a
-- replica that missed them). Such a scope's checkpoint is not moved, so nothing
-- resumes past the loss; the watcher relists it.
--
-- KEYS: 1 marks hash, 2 checkpoints hash
-- ARGV: 1 mode: "append" (bump marks, write checkpoints) or "check" (read only),
--       then per scope a triple: scope, expected mark ("" = none yet),
--       new checkpoint ("" = leave it)
-- Returns per scope: the mark stored before the call ("" = none) and, in append
-- mode, the mark after it.

local append = ARGV[1] == 'append'
local out = {}
for i = 2, #ARGV, 3 do
  local scope, expected, checkpoint = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local stored = redis.call('HGET', KEYS[1], scope)
  out[#out + 1] = stored or ''
  if append then
    local lost = expected ~= '' and (not stored or tonumber(stored) < tonumber(expected))
    if checkpoint ~= '' and not lost then
      redis.call('HSET', KEYS[2], scope, checkpoint)
    end
    out[#out + 1] = redis.call('HINCRBY', KEYS[1], scope, 1)
  end
end
return out
