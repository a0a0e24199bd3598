-- Appends statuses to one session in one atomic step, so that every process shares one numbering.
--
-- KEYS: 1 sequence counter, 2 history stream, 3 registry marker, 4 writer tokens (hash)
-- ARGV: 1 channel, 2 history capacity, 3 time to live (ms), 4 writer id, 5 batch token
--       ('0': no token), 6 floor (the counter is raised to at least this), 7 numbers skipped after
--       the last status, then pairs (numbers skipped before this status, text).
-- Returns {1, last sequence number}, or {0, counter} when this writer's batch was applied before.
-- Publishes the records `SEQ LEN\nTEXT` for each status and `SEQ -\n` when numbers were skipped
-- at the end, all in one message.
if ARGV[5] ~= '0' then
  local seen = redis.call('HGET', KEYS[4], ARGV[4])
  if seen and tonumber(seen) >= tonumber(ARGV[5]) then
    return {0, tonumber(redis.call('GET', KEYS[1]) or '0')}
  end
end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local before = cur
-- The counter can only lag the stream if it was lost on its own (eviction under maxmemory);
-- never reuse a number the stream already holds.
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if last then
  local n = tonumber(string.match(last[1], '^(%d+)'))
  if n > cur then cur = n end
end
local floor = tonumber(ARGV[6])
if floor > cur then cur = floor end
local out = {}
for i = 8, #ARGV, 2 do
  cur = cur + tonumber(ARGV[i]) + 1
  local text = ARGV[i + 1]
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], cur .. '-0', 't', text)
  out[#out + 1] = cur .. ' ' .. #text .. '\n' .. text
end
cur = cur + tonumber(ARGV[7])
if #out == 0 or tonumber(ARGV[7]) > 0 then
  if cur == before then
    return {1, cur}
  end
  out[#out + 1] = cur .. ' -\n'
end
redis.call('SET', KEYS[1], cur, 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
if ARGV[5] ~= '0' then
  redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
end
redis.call('PUBLISH', ARGV[1], table.concat(out))
return {1, cur}
