-- Ends a session everywhere: its history and counter go, and every process serving it hears
-- `x\n`. The writer tokens stay (until they expire), so a close sent again after a lost reply
-- is not applied twice, and the answer it gave is kept beside the token to be given again.
--
-- KEYS: 1 session (hash), 2 history stream
-- ARGV: 1 channel, 2 time to live (ms), 3 writer field, 4 token
-- Returns 1 when the session existed (its counter was there), else 0.
local seen = redis.call('HGET', KEYS[1], ARGV[3])
if seen and tonumber(seen) >= tonumber(ARGV[4]) then
  return tonumber(redis.call('HGET', KEYS[1], 'c' .. ARGV[3]) or '0')
end
redis.call('DEL', KEYS[2])
local existed = redis.call('HDEL', KEYS[1], 'seq')
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4], 'c' .. ARGV[3], existed)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[1], 'x\n')
return existed
