-- Puts sessions' counters back to at least what a process was given or delivered, so that no
-- number is given twice: after Redis restarted from an older snapshot (or without its data),
-- the counter (the stream, see append.lua) may stand below numbers subscribers already had.
-- The numbers put back take one empty entry, so readers see them as a gap. A session whose
-- history is gone and that was closed (its close hash counts closes, see close.lua) stays
-- closed.
--
-- KEYS: per session its history stream, then its close hash
-- ARGV: 1 time to live of a raised stream (ms), then per session its floor
-- Returns how many counters were put back.
local ttl = ARGV[1]
local raised = 0
for i = 1, #KEYS / 2 do
  local log, meta = KEYS[2 * i - 1], KEYS[2 * i]
  local floor = tonumber(ARGV[i + 1])
  local cur = 0
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
  if last then
    cur = tonumber(string.sub(last[1], 3)) + tonumber(last[2][4]) - 1
  end
  local closed = cur == 0 and redis.call('EXISTS', log) == 0
    and redis.call('HEXISTS', meta, 'closes') == 1
  if cur < floor and not closed then
    redis.call('XADD', log, '0-*', 'm', '', 'n', floor - cur)
    redis.call('XSETID', log, '0-' .. floor)
    redis.call('PEXPIRE', log, ttl)
    raised = raised + 1
  end
end
return raised
