-- Asks a task to stop, wherever it runs: records the request in the session's tasks hash (so
-- the process running the task finds it when it registers the task or reconnects) and tells
-- every process serving the session, on its channel.
--
-- KEYS: 1 session (hash: `seq`, present while the session exists), 2 tasks hash
-- ARGV: 1 channel, 2 task, 3 time to live (ms), 4 capacity
-- Publishes `c\n<task>`. Returns the task's state after the request: 'cancelling' for a task
-- that was running or cancelling, the final state of one that ended; 'unknown' for a task the
-- session does not know (the request is kept for it, up to four times `capacity` requests),
-- 'nosession' when the session does not exist.
local current = redis.call('HGET', KEYS[2], 't:' .. ARGV[2])
if current then
  local state = string.match(current, '^(%a+)')
  if state ~= 'running' then
    return state
  end
elseif redis.call('HEXISTS', KEYS[1], 'seq') == 0 then
  return 'nosession'
end
if current or redis.call('HLEN', KEYS[2]) < 4 * tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[2], 'c:' .. ARGV[2], 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[1], 'c\n' .. ARGV[2])
if current then
  return 'cancelling'
end
return 'unknown'
