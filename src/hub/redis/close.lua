-- Ends a session everywhere: its history and counter go, and every process serving it hears
-- `x\n`. The writer tokens stay (until they expire), so a close sent again after a lost reply
-- is not applied twice.
--
-- KEYS: 1 session (hash), 2 history stream
-- ARGV: 1 channel, 2 time to live (ms), 3 writer field, 4 token
-- Returns 1, or 0 when this writer's close was applied before.
local seen = redis.call('HGET', KEYS[1], ARGV[3])
if seen and tonumber(seen) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], 'seq')
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[1], 'x\n')
return 1
