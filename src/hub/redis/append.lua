-- Appends statuses to one session in one atomic step, so that every process shares one numbering.
--
-- KEYS: 1 session (hash: `seq`, the last number given, present while the session exists, and
--       `w:<writer>`, the last token each writer applied), 2 history stream (ids `<seq>-0`)
-- ARGV: 1 channel, 2 history capacity, 3 time to live (ms), 4 writer field, 5 token ('0': none),
--       6 floor (the counter is raised to at least this), 7 numbers skipped after the last
--       status, 8 the records to publish (built by the writer), then pairs (numbers skipped
--       before this status, text).
-- Publishes `<base>\n` followed by the records, `<base>` being the counter before the first
-- status (see wire.rs). Returns {1, last number given}, or {0, counter} when this writer's
-- token shows the call was applied before.
local meta = redis.call('HMGET', KEYS[1], 'seq', ARGV[4])
if ARGV[5] ~= '0' and meta[2] and tonumber(meta[2]) >= tonumber(ARGV[5]) then
  return {0, tonumber(meta[1] or '0')}
end
local cur
if meta[1] then
  cur = tonumber(meta[1])
else
  -- No counter: a new session, or a counter lost on its own (evicted under maxmemory). Never
  -- reuse a number the stream already holds.
  cur = 0
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
  if last then
    cur = tonumber(string.match(last[1], '^(%d+)'))
  end
end
local before = cur
local floor = tonumber(ARGV[6])
if floor > cur then
  cur = floor
end
local base = cur
for i = 9, #ARGV, 2 do
  cur = cur + tonumber(ARGV[i]) + 1
  redis.call('XADD', KEYS[2], cur .. '-0', 't', ARGV[i + 1])
end
cur = cur + tonumber(ARGV[7])
if cur == before and meta[1] then
  return {1, cur}
end
if #ARGV > 8 then
  redis.call('XTRIM', KEYS[2], 'MAXLEN', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if ARGV[5] ~= '0' then
  redis.call('HSET', KEYS[1], 'seq', cur, ARGV[4], ARGV[5])
else
  redis.call('HSET', KEYS[1], 'seq', cur)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[1], base .. '\n' .. ARGV[8])
return {1, cur}
