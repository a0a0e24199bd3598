-- Appends a batch of statuses of several sessions in one atomic step, so that every process
-- shares one numbering per session and one call serves many sessions. On one Redis the call
-- may cover any sessions; on a Redis Cluster, only the sessions of one partition (their keys
-- share the partition's hash tag, so the call runs on the shard that owns them).
--
-- KEYS: 1 the writer's token (a string: the last token this writer applied here), then per
--       session its hash (`seq`: the last number given, present while the session exists) and
--       its history stream
-- ARGV: 1 'PUBLISH' or 'SPUBLISH', 2 the channel of the whole call ('': each session publishes
--       on its own), 3 history capacity, 4 time to live of a renewed key (ms), 5 token ('0':
--       none), 6 time to live of the token (ms), then 7 per session: its id, its channel (''
--       when the call has one), floor (the counter is raised to at least this first), numbers
--       the batch takes, numbers skipped before its first status ('-': it has none), '1' to
--       renew its keys' time to live, its records (built by the writer, see wire.rs; opaque
--       here)
-- Each session's part of the message, its segment, is `<base>\n<records>`, `<base>` being its
-- counter before the batch; when the part has a status the segment is added to the session's
-- stream under the id `<first seq>-0` with the field `l`, its last number. Each segment is
-- published as the frame `<id length> <segment length>\n<id><segment>`: one message of every
-- frame on the call's channel, or one message per session on its own channel.
-- Returns {1, counter after, ...} (a counter per session, in order), or {0, counter, ...} when
-- this writer's token shows the call was applied before.
local sessions = (#KEYS - 1) / 2
local token = ARGV[5]
if token ~= '0' then
  local seen = redis.call('GET', KEYS[1])
  if seen and tonumber(seen) >= tonumber(token) then
    local out = {0}
    for i = 1, sessions do
      out[i + 1] = tonumber(redis.call('HGET', KEYS[2 * i], 'seq') or '0')
    end
    return out
  end
end
local publish, shared = ARGV[1], ARGV[2]
local capacity = tonumber(ARGV[3])
local ttl = ARGV[4]
local frames = {}
local out = {1}
local a = 7
for i = 1, sessions do
  local meta, log = KEYS[2 * i], KEYS[2 * i + 1]
  local id, channel, floor = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local numbers, first, renew = tonumber(ARGV[a + 3]), ARGV[a + 4], ARGV[a + 5]
  local records = ARGV[a + 6]
  a = a + 7
  local cur = redis.call('HINCRBY', meta, 'seq', numbers)
  local before = cur - numbers
  local base = before
  if before == 0 then
    -- A new counter (a new session, or one lost on its own, evicted under maxmemory): never
    -- reuse a number the stream already holds. Its keys get their time to live now.
    local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
    if last then
      base = tonumber(last[2][4])
    end
    renew = '1'
  end
  if floor > base then
    base = floor
  end
  if base ~= before then
    cur = base + numbers
    redis.call('HSET', meta, 'seq', cur)
  end
  if cur ~= before then
    local segment = base .. '\n' .. records
    if first ~= '-' then
      redis.call('XADD', log, (base + tonumber(first) + 1) .. '-0', 'm', segment, 'l', cur)
      -- Keep every batch holding one of the last `capacity` numbers.
      local oldest = cur - capacity + 1
      if oldest > 1 then
        local keep = redis.call('XREVRANGE', log, oldest .. '-0', '-', 'COUNT', 1)[1]
        if keep then
          redis.call('XTRIM', log, 'MINID', keep[1])
        end
      end
    end
    local frame = #id .. ' ' .. #segment .. '\n' .. id .. segment
    if shared == '' then
      redis.call(publish, channel, frame)
    else
      frames[#frames + 1] = frame
    end
  end
  if renew == '1' then
    redis.call('PEXPIRE', meta, ttl)
    redis.call('PEXPIRE', log, ttl)
  end
  out[i + 1] = cur
end
if #frames > 0 then
  redis.call(publish, shared, table.concat(frames))
end
if token ~= '0' then
  redis.call('SET', KEYS[1], token, 'PX', ARGV[6])
end
return out
