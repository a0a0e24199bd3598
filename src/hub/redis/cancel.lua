-- Asks a task to stop, wherever it runs: records the request in the session's tasks hash (so
-- the process running the task finds it when it registers the task or reconnects) and tells
-- every process serving the session, on its channel (its partition's on a cluster).
--
-- KEYS: 1 tasks hash, 2 history stream (present while the session exists)
-- ARGV: 1 'PUBLISH' or 'SPUBLISH', 2 channel, 3 the session's id, 4 task, 5 time to live (ms),
--       6 capacity
-- Publishes the frame `<id length> <task length> c\n<id><task>`. Returns the task's state after
-- the request: 'cancelling' for a task that was running or cancelling, the final state of one
-- that ended; 'unknown' for a task the session does not know (the request is kept for it, up
-- to four times `capacity` requests), 'nosession' when the session does not exist.
local current = redis.call('HGET', KEYS[1], 't:' .. ARGV[4])
if current then
  local state = string.match(current, '^(%a+)')
  if state ~= 'running' then
    return state
  end
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  return 'nosession'
end
if current or redis.call('HLEN', KEYS[1]) < 4 * tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[4], 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local id = ARGV[3]
redis.call(ARGV[1], ARGV[2], #id .. ' ' .. #ARGV[4] .. ' c\n' .. id .. ARGV[4])
if current then
  return 'cancelling'
end
return 'unknown'
