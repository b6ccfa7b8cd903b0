-- aioconnpool fleet: fleet-wide pacing (GCRA) and pauses, in Redis time.
--
-- One call carries the pacing operations of one process's loop turn, for
-- any number of hosts. It is a script of its own, beside _script.lua: it
-- needs no session or lease (a reservation is a moment in time, not a slot
-- held), so an outage or a lapsed lease of the limits' protocol does not
-- touch it, and a pacing call never waits for a limits call.
--
-- Time is the server's (TIME), in integer microseconds, never a client's
-- clock: a reply says how long to wait *from now*, and the client starts
-- counting when the reply arrives, which is later (conservative).
--
-- KEYS[1]  P.."pace", the pause channel's name: any key with the fleet's
--          hash tag, so that a Redis Cluster routes the call to the fleet's
--          shard (every key below shares the tag).
-- ARGV[1]  the prefix P = "aioconnpool:{NAME}:"
-- ARGV[2]  the caller's process id (pause messages name it, so that a
--          process skips its own)
-- ARGV[3]  the number of operations; then five words each:
--            R name gap_us within_us -      reserve a start (GCRA): start =
--                                           max(now, tat, until); tat =
--                                           start + gap. Refused (nothing
--                                           changes) when start - now >
--                                           within_us (-1: no deadline).
--                                           Reply {wait_us, 1|0 (reserved),
--                                           pause_left_us, reason}
--            C name gap_us within_us -      confirm a start, right before the
--                                           request is sent: due = max(now,
--                                           next); when due > now, reply
--                                           {due - now, 2 (wait and confirm
--                                           again) or 0 (past within_us),
--                                           ...}; else next = now + gap, tat
--                                           = max(tat, next), reply {0, 1,
--                                           ...}. A reservation alone cannot
--                                           see that the start before it
--                                           came late (a process woken late,
--                                           a slow connect): this can.
--            P name ms reason keyjson       pause name for ms more (a later
--                                           end wins), announced on the
--                                           channel. Reply {pause_left_us,
--                                           0, pause_left_us, reason}
--            U name - - keyjson             end name's pause now, announced.
--                                           Reply {0, 1, 0, ""}
--            L - - - -                      list the pauses in force: reply
--                                           {n, 1, 0, ""} followed by n
--                                           entries {keyjson, left_us, reason}
--
-- Reply: one entry per operation, in order (L's entries follow its own).
--
-- Data, under P:
--   P.."p:"..name  HASH tat (us), next (us: the earliest next confirmed
--                  start), until (us), reason, k (the PoolKey as JSON)
--                  expires once neither tat nor the pause matters any more
--   P.."paused"    ZSET name -> pause end (us), for L; expired entries go
--                  on each P and L
-- Pause messages on P.."pace": cjson {o=origin, op="P"|"U", k=keyjson,
--   left=us, r=reason}

local P = ARGV[1]
local origin = ARGV[2]
local n = tonumber(ARGV[3])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- Lua numbers are doubles: integers of microseconds (about 1.8e15) are
-- exact, but passing a number to redis.call formats it with %.17g at best;
-- format them as integers ourselves.
local function us(x) return string.format('%d', x) end

local function keep(h, last)
  -- The key matters until its tat or pause end has passed; a second more,
  -- so that a clock read a moment later still finds it.
  local ms = math.floor((last - now) / 1000) + 1000
  if ms < 1000 then ms = 1000 end
  redis.call('PEXPIRE', h, ms)
end

local function announce(op, kjson, left, reason)
  redis.call('PUBLISH', P .. 'pace', cjson.encode(
    {o = origin, op = op, k = kjson, left = left, r = reason}))
end

local replies = {}
local i = 4
for _ = 1, n do
  local op, name, a, b, c = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local h = P .. 'p:' .. name
  if op == 'R' then
    local v = redis.call('HMGET', h, 'tat', 'until', 'reason')
    local tat = tonumber(v[1]) or 0
    local untl = tonumber(v[2]) or 0
    local start = math.max(now, tat, untl)
    local wait = start - now
    local within = tonumber(b)
    local left = math.max(untl - now, 0)
    if within >= 0 and wait > within then
      replies[#replies + 1] = {wait, 0, left, v[3] or ''}
    else
      local next_tat = start + tonumber(a)
      redis.call('HSET', h, 'tat', us(next_tat))
      keep(h, math.max(next_tat, untl))
      replies[#replies + 1] = {wait, 1, left, v[3] or ''}
    end
  elseif op == 'C' then
    local v = redis.call('HMGET', h, 'next', 'tat', 'until', 'reason')
    local nxt = tonumber(v[1]) or 0
    local tat = tonumber(v[2]) or 0
    local untl = tonumber(v[3]) or 0
    local left = math.max(untl - now, 0)
    local within = tonumber(b)
    if nxt > now then
      -- (The pause is not waited out here, holding a connection: the
      -- reservation honoured it, and a pause set since then does not recall
      -- a request already handed to the pool.)
      local ok = 2
      if within >= 0 and nxt - now > within then ok = 0 end
      replies[#replies + 1] = {nxt - now, ok, left, v[4] or ''}
    else
      nxt = now + tonumber(a)
      redis.call('HSET', h, 'next', us(nxt), 'tat', us(math.max(tat, nxt)))
      keep(h, math.max(tat, nxt, untl))
      replies[#replies + 1] = {0, 1, left, v[4] or ''}
    end
  elseif op == 'P' then
    local v = redis.call('HMGET', h, 'tat', 'until', 'reason')
    local tat = tonumber(v[1]) or 0
    local untl = tonumber(v[2]) or 0
    local reason = v[3] or ''
    local wanted = now + tonumber(a) * 1000
    if wanted > untl then
      untl = wanted
      reason = b
      redis.call('HSET', h, 'until', us(untl), 'reason', reason, 'k', c)
      redis.call('ZADD', P .. 'paused', us(untl), name)
    end
    keep(h, math.max(tat, untl))
    redis.call('ZREMRANGEBYSCORE', P .. 'paused', '-inf', us(now))
    redis.call('PEXPIRE', P .. 'paused', math.floor((untl - now) / 1000) + 1000)
    announce('P', c, untl - now, reason)
    replies[#replies + 1] = {untl - now, 0, untl - now, reason}
  elseif op == 'U' then
    redis.call('HDEL', h, 'until', 'reason')
    redis.call('ZREM', P .. 'paused', name)
    announce('U', c, 0, '')
    replies[#replies + 1] = {0, 1, 0, ''}
  elseif op == 'L' then
    redis.call('ZREMRANGEBYSCORE', P .. 'paused', '-inf', us(now))
    local names = redis.call('ZRANGE', P .. 'paused', 0, -1)
    local entries = {}
    for _, paused in ipairs(names) do
      local v = redis.call('HMGET', P .. 'p:' .. paused, 'until', 'reason', 'k')
      local untl = tonumber(v[1]) or 0
      if untl > now and v[3] then
        entries[#entries + 1] = {v[3], untl - now, v[2] or ''}
      end
    end
    replies[#replies + 1] = {#entries, 1, 0, ''}
    for _, e in ipairs(entries) do replies[#replies + 1] = e end
  end
end
return replies
