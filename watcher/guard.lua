-- The watcher's guard against a Redis that forgot: runs in the same MULTI/EXEC as
-- the stream entries it covers. Every append raises a per-scope mark past both
-- what Redis holds and what the watcher last wrote, so the mark only ever grows
-- (also across a Redis that restarted empty); a mark lower than the watcher last
-- wrote (or gone) means Redis lost writes (a restart without persistence, an
-- older snapshot, a failover to a replica that missed them). Such a scope's
-- checkpoint is not moved, so nothing resumes past the loss; the watcher relists
-- it. Each append also names its writer, so a mark that moved past ours tells a
-- second watcher from our own append sent twice (a retry after a timeout).
--
-- KEYS: 1 marks hash, 2 checkpoints hash, 3 writers hash
-- ARGV: 1 mode: "append" (raise marks, write checkpoints) or "check" (no append),
--       2 this watcher's id,
--       then per scope a triple: scope, expected mark ("" = none yet),
--       new checkpoint ("" = leave it)
-- Returns per scope: the mark stored before the call ("" = none), the writer of
-- that mark ("" = unknown) and, in append mode, the mark after it. A check that
-- finds a loss puts our mark back, so the loss is reported once, and an even
-- older copy of Redis (a snapshot from before it restarted empty) still shows as
-- a loss later.

local append = ARGV[1] == 'append'
local out = {}
for i = 3, #ARGV, 3 do
  local scope, expected, checkpoint = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local stored = redis.call('HGET', KEYS[1], scope)
  out[#out + 1] = stored or ''
  out[#out + 1] = redis.call('HGET', KEYS[3], scope) or ''
  local ours = tonumber(expected) or 0
  local held = tonumber(stored) or 0
  local lost = expected ~= '' and held < ours
  if append then
    if checkpoint ~= '' and not lost then
      redis.call('HSET', KEYS[2], scope, checkpoint)
    end
    local mark = math.max(held, ours) + 1
    redis.call('HSET', KEYS[1], scope, mark)
    redis.call('HSET', KEYS[3], scope, ARGV[2])
    out[#out + 1] = mark
  elseif lost then
    redis.call('HSET', KEYS[1], scope, expected)
    redis.call('HSET', KEYS[3], scope, ARGV[2])
  end
end
return out
