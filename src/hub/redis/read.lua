-- Reads the batches of a session's history that hold numbers from `from` on, together with its
-- counter (see append.lua: the stream is the counter), in one atomic step: whatever the counter
-- has numbered and the stream does not hold is lost. It can also open the session (an empty
-- stream) and renew its key, as a process that starts serving it does.
--
-- KEYS: 1 history stream, 2 the session's close hash (its field `closes` counts the closes, see
--       close.lua)
-- ARGV: 1 first sequence number wanted ('-': read nothing), 2 last one wanted ('+': up to the
--       end), 3 time to live (ms) to open the session with and renew its key ('0': neither)
-- Returns {counter, {id, {'m', records, 'n', numbers}}..., closes}, ids being `0-<first
-- number>`; the caller drops numbers outside the range.
local log = KEYS[1]
local closes = tonumber(redis.call('HGET', KEYS[2], 'closes') or '0')
if ARGV[3] ~= '0' and redis.call('PEXPIRE', log, ARGV[3]) == 0 then
  redis.call('XGROUP', 'CREATE', log, 'open', '$', 'MKSTREAM')
  redis.call('XGROUP', 'DESTROY', log, 'open')
  redis.call('PEXPIRE', log, ARGV[3])
end
local head = 0
local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
if last then
  head = tonumber(string.sub(last[1], 3)) + tonumber(last[2][4]) - 1
end
if ARGV[1] == '-' or tonumber(ARGV[1]) > head then
  -- Nothing numbered from there on yet.
  return {head, {}, closes}
end
local start = '0-' .. ARGV[1]
local holding = redis.call('XREVRANGE', log, start, '-', 'COUNT', 1)[1]
if holding then
  start = holding[1]
end
local to = ARGV[2]
if to ~= '+' then
  to = '0-' .. to
end
return {head, redis.call('XRANGE', log, start, to), closes}
