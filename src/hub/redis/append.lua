-- Appends a batch of statuses to one session in one atomic step, so that every process shares
-- one numbering.
--
-- KEYS: 1 session (hash: `seq`, the last number given, present while the session exists, and
--       `w:<writer>`, the last token each writer applied), 2 history stream
-- ARGV: 1 channel, 2 history capacity, 3 time to live (ms), 4 writer field, 5 token ('0': none),
--       6 floor (the counter is raised to at least this first), 7 numbers the batch takes,
--       8 numbers skipped before its first status ('-': it has none), 9 its records (built by the
--       writer, see wire.rs), 10 numbers to reserve after the floor ('0': none; see below)
-- The message `<base>\n<records>`, `<base>` being the counter before the batch, is published
-- and, when the batch has a status, added to the stream under the id `<first seq>-0` with the
-- field `l`, its last number. Returns {1, counter after}, or {0, counter} when this writer's
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
    cur = tonumber(last[2][4])
  end
end
local before = cur
local floor = tonumber(ARGV[6])
local reserve = tonumber(ARGV[10])
if reserve > 0 then
  -- A call of unknown fate after Redis lost its data: if it ran, it took the `reserve` numbers
  -- after the floor (the writer's last confirmed counter). A counter exactly at their end was
  -- raised there by a process that saw it: take nothing more. A counter at or below the floor:
  -- take exactly those numbers. Anything else means other writers numbered statuses since:
  -- take as many fresh numbers, so whoever missed the call still gets a gap.
  if cur <= floor then
    cur = floor + reserve
  elseif cur ~= floor + reserve then
    cur = cur + reserve
  end
elseif floor > cur then
  cur = floor
end
local base = cur
cur = cur + tonumber(ARGV[7])
if cur == before and meta[1] then
  return {1, cur}
end
local message = base .. '\n' .. ARGV[9]
if ARGV[8] ~= '-' then
  local first = base + tonumber(ARGV[8]) + 1
  redis.call('XADD', KEYS[2], first .. '-0', 'm', message, 'l', cur)
  -- Keep every batch holding one of the last `capacity` numbers.
  local oldest = cur - tonumber(ARGV[2]) + 1
  if oldest > 1 then
    local keep = redis.call('XREVRANGE', KEYS[2], oldest .. '-0', '-', 'COUNT', 1)[1]
    if keep then
      redis.call('XTRIM', KEYS[2], 'MINID', keep[1])
    end
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if ARGV[5] ~= '0' then
  redis.call('HSET', KEYS[1], 'seq', cur, ARGV[4], ARGV[5])
else
  redis.call('HSET', KEYS[1], 'seq', cur)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[1], message)
return {1, cur}
