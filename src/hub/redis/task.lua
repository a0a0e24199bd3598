-- Records a task's state in its session's tasks hash and tells every process serving the
-- session, on its channel; says whether a stop was asked for the task before.
--
-- KEYS: 1 session (hash: `seq`, the last number given), 2 tasks hash, 3 history stream
-- ARGV: 1 channel, 2 task, 3 state, 4 message ('' for none), 5 time to live (ms), 6 capacity
-- The tasks hash holds `t:<task>` = `<state> <last seq> <order>\n<message>`, `c:<task>` for a
-- stop asked, and `n`, the last order given. A final state is never replaced. A new task makes
-- room by forgetting the ended tasks registered first, down to `capacity`.
-- Publishes `t\n<task> <state> <last seq>\n<message>`. Returns {last seq, 1 if a stop was
-- asked else 0}.
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq then
  -- No counter: a new session, or a counter lost on its own. Never reuse a number the stream
  -- already holds (as the append script does).
  seq = 0
  local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
  if last then
    seq = tonumber(last[2][4])
  end
  redis.call('HSET', KEYS[1], 'seq', seq)
end
seq = tonumber(seq)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local field = 't:' .. ARGV[2]
local asked = redis.call('HEXISTS', KEYS[2], 'c:' .. ARGV[2])
local function final(state)
  return state == 'finished' or state == 'failed' or state == 'cancelled'
end
local current = redis.call('HGET', KEYS[2], field)
local order
if current then
  local state, was = string.match(current, '^(%a+) %d+ (%d+)')
  if final(state) then
    return {seq, asked}
  end
  order = was
else
  order = redis.call('HINCRBY', KEYS[2], 'n', 1)
end
redis.call('HSET', KEYS[2], field, ARGV[3] .. ' ' .. seq .. ' ' .. order .. '\n' .. ARGV[4])
if not current then
  local all = redis.call('HGETALL', KEYS[2])
  local count = 0
  local ended = {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 't:' then
      count = count + 1
      local state, was = string.match(all[i + 1], '^(%a+) %d+ (%d+)')
      if final(state) then
        table.insert(ended, {tonumber(was), string.sub(all[i], 3)})
      end
    end
  end
  local capacity = tonumber(ARGV[6])
  if count > capacity then
    table.sort(ended, function(a, b) return a[1] < b[1] end)
    for i = 1, math.min(count - capacity, #ended) do
      redis.call('HDEL', KEYS[2], 't:' .. ended[i][2], 'c:' .. ended[i][2])
    end
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[1], 't\n' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. seq .. '\n' .. ARGV[4])
return {seq, asked}
