-- Ends a session everywhere: its history (which is also its counter) goes, the session's close
-- count goes up, and every process serving it hears the frame `<id length> 0 x\n<id>` (see
-- append.lua). The writer tokens stay in the
-- session's hash (until it expires), so a close sent again after a lost reply is not applied
-- twice, and the answer it gave is kept beside the token to be given again.
--
-- KEYS: 1 session (hash of close tokens), 2 history stream
-- ARGV: 1 'PUBLISH' or 'SPUBLISH', 2 channel, 3 time to live (ms), 4 writer field, 5 token,
--       6 the session's id
-- Returns 1 when the session existed (its stream was there), else 0.
local seen = redis.call('HGET', KEYS[1], ARGV[4])
if seen and tonumber(seen) >= tonumber(ARGV[5]) then
  return tonumber(redis.call('HGET', KEYS[1], 'c' .. ARGV[4]) or '0')
end
local existed = redis.call('DEL', KEYS[2])
-- Closes are counted, so that a process that missed this one's message (cut off from Redis
-- meanwhile) finds out when it reads the session again (see read.lua).
redis.call('HINCRBY', KEYS[1], 'closes', 1)
redis.call('HSET', KEYS[1], ARGV[4], ARGV[5], 'c' .. ARGV[4], existed)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call(ARGV[1], ARGV[2], #ARGV[6] .. ' 0 x\n' .. ARGV[6])
return existed
