-- Reads the batches of a session's history that hold numbers from `from` on, together with its
-- counter, in one atomic step: whatever the counter has numbered and the stream does not hold
-- is lost. A reader that starts serving the session also opens it and renews its keys.
--
-- KEYS: 1 session (hash, field `seq`), 2 history stream
-- ARGV: 1 first sequence number wanted, 2 last one wanted ('+': up to the end), 3 time to live
--       (ms) to open the session with and renew its keys ('0': neither)
-- Returns {counter, {id, {'m', segment, 'l', last}}...}; the caller drops numbers outside the
-- range.
if ARGV[3] ~= '0' then
  redis.call('HSETNX', KEYS[1], 'seq', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
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
