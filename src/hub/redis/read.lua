-- Reads the batches of a session's history that hold numbers from `from` on, together with its
-- counter, in one atomic step: whatever the counter has numbered and the stream does not hold
-- is lost.
--
-- KEYS: 1 session (hash, field `seq`), 2 history stream
-- ARGV: 1 first sequence number wanted, 2 last one wanted ('+': up to the end)
-- Returns {counter, {id, {'m', message, 'l', last}}...}; the caller drops numbers outside the
-- range.
local head = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local start = ARGV[1] .. '-0'
local holding = redis.call('XREVRANGE', KEYS[2], start, '-', 'COUNT', 1)[1]
if holding then
  start = holding[1]
end
local to = ARGV[2]
if to ~= '+' then
  to = to .. '-0'
end
return {head, redis.call('XRANGE', KEYS[2], start, to)}
