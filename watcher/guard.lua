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
-- A loss found is also written down: the writer becomes "<id> lost" until an
-- append from a watcher that owes the scope a relist not yet begun (which covers
-- the loss). So a reply lost on the way back (the check or append did run) cannot
-- hide the loss: the next call finds the note and reports it again, and no
-- checkpoint moves meanwhile. A relist already begun does not cover it: the loss
-- may have taken its BEGIN and pages.
--
-- KEYS: 1 marks hash, 2 checkpoints hash, 3 writers hash
-- ARGV: 1 mode: "append" (raise marks, write checkpoints) or "check" (no append),
--       2 this watcher's id,
--       then per scope a quadruple: scope, expected mark ("" = none yet),
--       new checkpoint ("" = leave it), "1" if the watcher owes the scope a
--       relist that has not begun (it covers any loss) else ""
-- Returns per scope: the mark stored before the call ("" = none), the writer of
-- that mark ("" = unknown) and, in append mode, the mark after it. A check that
-- finds a loss puts our mark back, so an even older copy of Redis (a snapshot
-- from before it restarted empty) still shows as a loss later.

local LOST = ' lost'
local append = ARGV[1] == 'append'
local out = {}
for i = 3, #ARGV, 4 do
  local scope, expected, checkpoint, owed = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local stored = redis.call('HGET', KEYS[1], scope)
  local writer = redis.call('HGET', KEYS[3], scope) or ''
  out[#out + 1] = stored or ''
  out[#out + 1] = writer
  local ours = tonumber(expected) or 0
  local held = tonumber(stored) or 0
  local noted = string.sub(writer, -#LOST) == LOST
  local lost = (expected ~= '' and held < ours) or (noted and owed ~= '1')
  local note = lost and owed ~= '1'
  if append then
    if checkpoint ~= '' and not lost then
      redis.call('HSET', KEYS[2], scope, checkpoint)
    end
    local mark = math.max(held, ours) + 1
    redis.call('HSET', KEYS[1], scope, mark)
    redis.call('HSET', KEYS[3], scope, note and (ARGV[2] .. LOST) or ARGV[2])
    out[#out + 1] = mark
  elseif lost then
    if held < ours then
      redis.call('HSET', KEYS[1], scope, expected)
    end
    if note then
      redis.call('HSET', KEYS[3], scope, ARGV[2] .. LOST)
    end
  end
end
return out
