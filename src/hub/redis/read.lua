-- Reads a session's history from a sequence number on, together with its counter, in one
-- atomic step: whatever the counter has numbered and the stream does not hold is lost.
--
-- KEYS: 1 session (hash, field `seq`), 2 history stream
-- ARGV: 1 first sequence number wanted, 2 last one wanted ('+': up to the end)
-- Returns {counter, {id, {field, text}}...}.
local head = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local to = ARGV[2]
if to ~= '+' then
  to = to .. '-0'
end
return {head, redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', to)}
