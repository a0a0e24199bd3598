-- Appends a batch of statuses of several sessions in one atomic step, so that every process
-- shares one numbering per session and one call serves many sessions. On one Redis the call
-- may cover any sessions; on a Redis Cluster, only the sessions of one partition (their keys
-- share the partition's hash tag, so the call runs on the shard that owns them).
--
-- A session's history stream is also its counter: each batch is one entry whose id is
-- `0-<first number it takes>`, added with the id `0-*` so that Redis gives it the number after
-- the last one (no counter to read or write), with the fields `m` (its records, built by the
-- writer, see wire.rs; opaque here) and `n` (how many numbers it takes). A batch that takes
-- more than one number moves the stream's last id on to its last number.
--
-- The call's token (`<writer>:<n>`, unique) goes in the field `t` of the first entry it adds.
-- A call sent again after its reply was lost asks for the check: if the first session's stream
-- holds an entry with that token after the floor (the highest number the writer had been given
-- before the call, so the entry would be above it), the call ran, and nothing is added twice.
--
-- A call also records the changes of tasks of its sessions (see below), after its statuses:
-- the writer puts a change in the call that follows every status of its session queued
-- before it, and the statuses of that session queued after it in a later call.
--
-- KEYS: per session its history stream, then per task change its session's tasks hash and
--       history stream
-- ARGV: 1 'PUBLISH' or 'SPUBLISH', 2 the channel of the whole call (on one Redis every
--       session's, on a cluster its partition's), 3 history capacity, 4 time to live of a
--       renewed key (ms), 5 token ('': none), 6 '1' to check whether the call ran before,
--       7 time to live of a task's keys (ms), 8 task capacity (per session), 9 the number of
--       task changes, then
--       per session: its id, the head of its frame (`<id length> <records length> `), floor
--       (its numbers go on after at least this), the numbers the batch takes (0: only raise the
--       counter to the floor), '1' to renew its key's time to live, reserve (see below; '0':
--       none), its records; then per task change: the session's id, the task, its state, its
--       message ('' for none)
-- A reserve is a part of unknown fate after Redis lost its data: if it ran, it took the
-- `reserve` numbers after the floor (the writer's last confirmed counter). A counter exactly at
-- their end was raised there by a process that saw it: the part takes nothing more. Otherwise
-- it takes its numbers as any part does: after the floor when the counter is at or below it,
-- else after the counter (other writers numbered statuses since), so whoever missed the part
-- still gets a gap.
-- Each session's part is published as the frame `<id length> <records length> <first>\n<id>
-- <records>`, `<first>` being the first number it takes: one message of the call's frames on
-- its channel, so a call costs one publish however many sessions it serves. A frame of at
-- least `LARGE` bytes is published as a message of its own as soon as it is made: Redis's Lua
-- hashes every byte of every string it makes, so joining it to the others would cost as much
-- again as making it (a bulk call has few frames, each of hundreds of statuses). A session's
-- frames still reach every subscriber in order: at most one per call, and its task changes'
-- after it. (Nothing here formats a number: the frame is made of strings the writer sent and
-- the id Redis gave.)
-- A task change is recorded in its session's tasks hash, which holds `t:<task>` = `<state>
-- <last seq> <order>\n<message>` (`last seq` the session's counter then), `c:<task>` for a stop
-- asked, and `n`, the last order given. A final state is never replaced, nor a `cancelling`
-- by a `running`, and a state and message the task has already are not recorded or told again
-- (so a change sent again after its reply was lost changes nothing, even after later ones). A new task makes room by forgetting the ended tasks
-- registered first, down to the task capacity. A task opens its session, as a status would.
-- A recorded change goes in the call's message as the frame `<id length> <record length>
-- t\n<id><task> <state> <last seq>\n<message>`.
-- Returns {1, counter after, ..., asked, ...} (a counter per session, in order, then per task
-- change 1 if a stop was asked for the task, else 0), or {0, counter, ..., asked, ...} when the
-- token shows the call was applied before.
local LARGE = 8192

local function number(id)
  return tonumber(string.sub(id, 3))
end

local function counter(log)
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
  if not last then
    return 0
  end
  return number(last[1]) + tonumber(last[2][4]) - 1
end

-- Adds one batch; an error (a stream of another layout) comes back as a table.
local function add(log, records, taken, tagged)
  if tagged ~= '' then
    return redis.pcall('XADD', log, '0-*', 'm', records, 'n', taken, 't', tagged)
  end
  return redis.pcall('XADD', log, '0-*', 'm', records, 'n', taken)
end

-- Whether a stop was asked for `task` (its tasks hash `hash`): 1 or 0.
local function asked(hash, task)
  return redis.call('HEXISTS', hash, 'c:' .. task)
end

local changes = tonumber(ARGV[9])
local sessions = #KEYS - 2 * changes
local first = 10 + 7 * sessions
local token = ARGV[5]
if token ~= '' and ARGV[6] == '1' then
  for i = 1, sessions do
    local b = 10 + 7 * (i - 1)
    if tonumber(ARGV[b + 3]) > 0 then
      local after = '0-' .. (tonumber(ARGV[b + 2]) + 1)
      for _, entry in ipairs(redis.call('XRANGE', KEYS[i], after, '+')) do
        if entry[2][6] == token then
          local out = {0}
          for j = 1, sessions do
            out[j + 1] = counter(KEYS[j])
          end
          for j = 1, changes do
            out[sessions + j + 1] = asked(KEYS[sessions + 2 * j - 1], ARGV[first + 4 * (j - 1) + 1])
          end
          return out
        end
      end
      -- The token goes with the first part that adds an entry; only a reserve may add none.
      if tonumber(ARGV[b + 5]) == 0 then
        break
      end
    end
  end
end
local publish, channel = ARGV[1], ARGV[2]
local capacity = tonumber(ARGV[3])
local ttl = ARGV[4]
local frames = {}
local out = {1}
local a = 10
for i = 1, sessions do
  local log = KEYS[i]
  local id, head, floor = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local numbers, renew = tonumber(ARGV[a + 3]), ARGV[a + 4]
  local reserve, records = tonumber(ARGV[a + 5]), ARGV[a + 6]
  a = a + 7
  local cur
  if reserve > 0 and counter(log) == floor + reserve then
    -- A process that saw this reserved part raised the counter to its end: nothing more.
    cur = floor + reserve
  elseif numbers == 0 then
    cur = counter(log)
    if cur < floor then
      -- Redis lost what this process had seen: numbering goes on after it.
      redis.call('XADD', log, '0-*', 'm', '', 'n', floor - cur)
      redis.call('XSETID', log, '0-' .. floor)
      redis.call('PEXPIRE', log, ttl)
      cur = floor
    end
  else
    local tagged, taken = token, ARGV[a - 4]
    token = ''
    local added = add(log, records, taken, tagged)
    if type(added) == 'table' then
      -- A stream of the first key layout: it cannot be numbered this way, so it goes.
      redis.call('DEL', log)
      added = add(log, records, taken, tagged)
    end
    local base = number(added) - 1
    if base < floor then
      -- Redis lost numbers this writer was given (a failover, a restart): never reuse them.
      redis.call('XDEL', log, added)
      redis.call('XSETID', log, '0-' .. floor)
      added = add(log, records, taken, tagged)
      base = floor
    end
    cur = base + numbers
    if numbers > 1 then
      redis.call('XSETID', log, '0-' .. cur)
    end
    if base == 0 then
      -- A new stream: it gets its time to live now.
      renew = '1'
    end
    -- Keep every batch holding one of the last `capacity` numbers.
    local oldest = cur - capacity + 1
    if oldest > 1 then
      local keep = redis.call('XREVRANGE', log, '0-' .. oldest, '-', 'COUNT', 1)[1]
      if keep then
        redis.call('XTRIM', log, 'MINID', keep[1])
      end
    end
    local frame = head .. string.sub(added, 3) .. '\n' .. id .. records
    if #frame >= LARGE then
      redis.call(publish, channel, frame)
    else
      frames[#frames + 1] = frame
    end
    if renew == '1' then
      redis.call('PEXPIRE', log, ttl)
    end
  end
  out[i + 1] = cur
end
local function final(state)
  return state == 'finished' or state == 'failed' or state == 'cancelled'
end

-- Records one task change; its frame, or nil when there is nothing new to tell. Also returns
-- whether a stop was asked for the task.
local function record(hash, log, id, task, state, message)
  local ttl = ARGV[7]
  local seq = counter(log)
  if redis.call('PEXPIRE', log, ttl) == 0 then
    -- The session's stream, empty: a task opens its session.
    redis.call('XGROUP', 'CREATE', log, 'open', '$', 'MKSTREAM')
    redis.call('XGROUP', 'DESTROY', log, 'open')
    redis.call('PEXPIRE', log, ttl)
  end
  local field = 't:' .. task
  -- One read for the stop asked and the task's record (a missing field reads as false).
  local fields = redis.call('HMGET', hash, 'c:' .. task, field)
  local stop = 0
  if fields[1] then
    stop = 1
  end
  local current = fields[2]
  local order
  if current then
    local was_state, was, was_message = string.match(current, '^(%a+) %d+ (%d+)\n(.*)$')
    -- A task only moves on (running, cancelling, a final state): a `running` over its
    -- `cancelling` is a call sent again after a later one had run.
    if final(was_state) or (was_state == state and was_message == message)
      or (was_state == 'cancelling' and state == 'running') then
      return nil, stop
    end
    order = was
  else
    order = redis.call('HINCRBY', hash, 'n', 1)
  end
  redis.call('HSET', hash, field, state .. ' ' .. seq .. ' ' .. order .. '\n' .. message)
  -- Fields besides `n` bound the tasks: only past the capacity is there room to make.
  local capacity = tonumber(ARGV[8])
  if not current and redis.call('HLEN', hash) - 1 > capacity then
    local all = redis.call('HGETALL', hash)
    local count = 0
    local ended = {}
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, 2) == 't:' then
        count = count + 1
        local was_state, was = string.match(all[i + 1], '^(%a+) %d+ (%d+)')
        if final(was_state) then
          table.insert(ended, {tonumber(was), string.sub(all[i], 3)})
        end
      end
    end
    if count > capacity then
      table.sort(ended, function(x, y) return x[1] < y[1] end)
      for i = 1, math.min(count - capacity, #ended) do
        redis.call('HDEL', hash, 't:' .. ended[i][2], 'c:' .. ended[i][2])
      end
    end
  end
  redis.call('PEXPIRE', hash, ttl)
  local text = task .. ' ' .. state .. ' ' .. seq .. '\n' .. message
  return #id .. ' ' .. #text .. ' t\n' .. id .. text, stop
end

for j = 1, changes do
  local c = first + 4 * (j - 1)
  local frame, stop = record(KEYS[sessions + 2 * j - 1], KEYS[sessions + 2 * j], ARGV[c],
    ARGV[c + 1], ARGV[c + 2], ARGV[c + 3])
  if frame then
    frames[#frames + 1] = frame
  end
  out[sessions + j + 1] = stop
end
if #frames == 1 then
  redis.call(publish, channel, frames[1])
elseif #frames > 1 then
  redis.call(publish, channel, table.concat(frames))
end
return out
