-- Records a task's state in its session's tasks hash and tells every process serving the
-- session, on its channel (its partition's on a cluster); says whether a stop was asked for the
-- task before. A task opens its session, as a status would.
--
-- KEYS: 1 tasks hash, 2 history stream (also the session's counter, see append.lua)
-- ARGV: 1 'PUBLISH' or 'SPUBLISH', 2 channel, 3 the session's id, 4 task, 5 state, 6 message
--       ('' for none), 7 time to live (ms), 8 capacity
-- The tasks hash holds `t:<task>` = `<state> <last seq> <order>\n<message>`, `c:<task>` for a
-- stop asked, and `n`, the last order given. A final state is never replaced, and a state and
-- message the task has already are not recorded or told again (so a call sent again after its
-- reply was lost changes nothing). A new task makes room by forgetting the ended tasks
-- registered first, down to `capacity`.
-- Publishes the frame `<id length> <record length> t\n<id><task> <state> <last seq>\n<message>`.
-- Returns {last seq, 1 if a stop was asked else 0}.
local log = KEYS[2]
local seq = 0
local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
if last then
  seq = tonumber(string.sub(last[1], 3)) + tonumber(last[2][4]) - 1
end
if redis.call('PEXPIRE', log, ARGV[7]) == 0 then
  redis.call('XGROUP', 'CREATE', log, 'open', '$', 'MKSTREAM')
  redis.call('XGROUP', 'DESTROY', log, 'open')
  redis.call('PEXPIRE', log, ARGV[7])
end
local field = 't:' .. ARGV[4]
local function final(state)
  return state == 'finished' or state == 'failed' or state == 'cancelled'
end
-- One read for the stop asked and the task's record (a missing field reads as false).
local fields = redis.call('HMGET', KEYS[1], 'c:' .. ARGV[4], field)
local asked = 0
if fields[1] then
  asked = 1
end
local current = fields[2]
local order
if current then
  local state, was, message = string.match(current, '^(%a+) %d+ (%d+)\n(.*)$')
  if final(state) or (state == ARGV[5] and message == ARGV[6]) then
    return {seq, asked}
  end
  order = was
else
  order = redis.call('HINCRBY', KEYS[1], 'n', 1)
end
redis.call('HSET', KEYS[1], field, ARGV[5] .. ' ' .. seq .. ' ' .. order .. '\n' .. ARGV[6])
-- Fields besides `n` bound the tasks: only past `capacity` of them is there room to make.
if not current and redis.call('HLEN', KEYS[1]) - 1 > tonumber(ARGV[8]) then
  local all = redis.call('HGETALL', KEYS[1])
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
  local capacity = tonumber(ARGV[8])
  if count > capacity then
    table.sort(ended, function(a, b) return a[1] < b[1] end)
    for i = 1, math.min(count - capacity, #ended) do
      redis.call('HDEL', KEYS[1], 't:' .. ended[i][2], 'c:' .. ended[i][2])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
local id = ARGV[3]
local record = ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. seq .. '\n' .. ARGV[6]
redis.call(ARGV[1], ARGV[2], #id .. ' ' .. #record .. ' t\n' .. id .. record)
return {seq, asked}
