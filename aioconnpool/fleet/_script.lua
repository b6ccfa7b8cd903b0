-- aioconnpool fleet: one atomic step of one process's session.
--
-- Every acquire, release, cancel, heartbeat and resync of a process is a call
-- of this script, batched: one call carries all the operations its process
-- gathered during one loop turn, for any number of hosts. Time is the
-- server's (TIME), never a client's clock.
--
-- KEYS[1]  the fleet's epoch key, "aioconnpool:{NAME}:epoch". Every other key
--          shares its prefix, hence its hash tag and Redis Cluster slot.
-- ARGV[1]  the prefix "aioconnpool:{NAME}:"
-- ARGV[2]  the caller's session id
-- ARGV[3]  lease TTL, milliseconds
-- ARGV[4]  the epoch the caller knows ("" when it knows none yet)
-- ARGV[5]  a session to drop first ("" for none): the caller's previous one,
--          or the caller itself when it leaves (then no group is read)
-- ARGV[6]  session info for `fleet status` ("" to leave it as it is)
-- ARGV[7]  "1" when the caller's session has had a call answered (it must
--          then still be there), "0" for a new session's first call
-- ARGV[8]  the number of host groups; then, per group:
--            host, limit, n, then n operations of two words each:
--            A t  acquire for ticket t (granted now, or queued FIFO)
--            C t  cancel ticket t: leave the queue, or give back its grant
--            K t  the caller took ticket t's grant (stop redelivering it)
--            R n  give back n slots
--            S n  the caller holds n slots (re-registration after a resync)
--            V n  the caller holds n slots once the operations before it
--                 are applied (grants stored, not yet taken, set aside):
--                 Redis counting fewer shows writes it lost (BEHIND)
--
-- Reply: {"OK", epoch, grace_ms_left, {host, used, queued, limit, mine,
--         n_direct, direct tickets..., stored tickets...}...}, or
--         {"EPOCH", epoch} when the caller's epoch is stale, or {"LOST",
--         epoch} when its session is gone (its lease ran out and it was
--         collected, or Redis lost it): nothing was applied, and the caller
--         resyncs under a new session. {"BEHIND", epoch}: applied, but the
--         caller's own operations showed Redis counting fewer of its slots
--         than it holds (a release or a take (K) of a slot Redis does not
--         have, or a count (V) above Redis's: writes lost in a failover);
--         the caller resyncs likewise. Direct grants were made in this
--         call; stored ones earlier, and stay stored until taken (K).
--
-- Data, under the prefix P:
--   P.."epoch"            "ID|GRACE_UNTIL_MS": ID changes when Redis lost the fleet
--   P.."seq"              FIFO sequence for queue entries
--   P.."sessions"         ZSET session -> lease expiry (ms, server time)
--   P.."sinfo"            HASH session -> "pid host ttl_ms started_ms"
--   P.."shosts:"..S       SET of the hosts session S holds, waits on or has
--                         grants on (left when none: a long session does not
--                         grow it, and collecting a dead one stays short)
--   P.."hosts"            ZSET host -> last use (ms), for `fleet status`
--   P.."h:"..H..":holders" HASH session -> slots held on H
--   P.."h:"..H..":queue"   ZSET "session ticket" -> seq (FIFO waiters)
--   P.."h:"..H..":granted" HASH session -> "t1 t2 ..." granted, not yet taken
--   P.."h:"..H..":queued"  HASH session -> its entries in H's queue
--   P.."h:"..H..":limit"   the limit last sent for H (expires unused)
--
-- Keys of hosts nobody uses go away: holders, queued and granted hashes
-- empty themselves, limit expires, and `hosts` drops hosts unused for an
-- hour.

local P = ARGV[1]
local me = ARGV[2]
local ttl = tonumber(ARGV[3])
local known_epoch = ARGV[4]
local drop = ARGV[5]
local info = ARGV[6]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The epoch: a fleet that Redis forgot (a restart without persistence) must
-- not admit anyone until the processes that still hold connections have
-- told it so. The first caller to find the key gone re-creates it, with a
-- grace period of one lease when it knew an earlier epoch.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  local grace_until = 0
  if known_epoch ~= '' then grace_until = now + ttl end
  epoch = t[1] .. t[2] .. '|' .. grace_until
  redis.call('SET', KEYS[1], epoch)
end
local bar = string.find(epoch, '|', 1, true)
local epoch_id = string.sub(epoch, 1, bar - 1)
local grace_until = tonumber(string.sub(epoch, bar + 1))
if known_epoch ~= '' and known_epoch ~= epoch_id then
  return {'EPOCH', epoch}
end
local in_grace = now < grace_until

local function hk(host, what) return P .. 'h:' .. host .. ':' .. what end

local function used_of(host)
  local n = 0
  for _, v in ipairs(redis.call('HVALS', hk(host, 'holders'))) do
    n = n + tonumber(v)
  end
  return n
end

-- Requests waiting for `host`, live sessions' only: the queue itself may
-- still hold entries of collected sessions, skipped when they reach the
-- head; counting those would keep a host looking busy (no kept slots, a
-- wrong `fleet status`) long after their owners died.
local function waiting_of(host)
  local n = 0
  for _, v in ipairs(redis.call('HVALS', hk(host, 'queued'))) do
    n = n + tonumber(v)
  end
  return n
end

local function alive(session)
  local exp = redis.call('ZSCORE', P .. 'sessions', session)
  return exp and tonumber(exp) > now
end

-- Set when the caller's own operations show that Redis counts fewer of its
-- slots than it holds: a release of a slot Redis does not count, or the
-- take of a grant Redis does not have. Only lost writes do that (a failover
-- to a replica that had not received them): the caller must register anew.
local behind = false

local function add_held(host, session, n)
  local held = redis.call('HINCRBY', hk(host, 'holders'), session, n)
  if held <= 0 then redis.call('HDEL', hk(host, 'holders'), session) end
  if held < 0 then behind = true end
end

local function add_queued(host, session, n)
  local queued = redis.call('HINCRBY', hk(host, 'queued'), session, n)
  if queued <= 0 then redis.call('HDEL', hk(host, 'queued'), session) end
end

local function remove_word(s, word)
  local out = {}
  local found = false
  for w in string.gmatch(s or '', '%S+') do
    if w == word and not found then found = true else out[#out + 1] = w end
  end
  return table.concat(out, ' '), found
end

local function forget_session(session, dirty)
  for _, host in ipairs(redis.call('SMEMBERS', P .. 'shosts:' .. session)) do
    redis.call('HDEL', hk(host, 'holders'), session)
    redis.call('HDEL', hk(host, 'granted'), session)
    redis.call('HDEL', hk(host, 'queued'), session)
    dirty[host] = true
  end
  redis.call('DEL', P .. 'shosts:' .. session)
  redis.call('ZREM', P .. 'sessions', session)
  redis.call('HDEL', P .. 'sinfo', session)
end

-- Hand free slots of `host` to the queue's head, FIFO, skipping entries of
-- sessions whose lease ran out. `mine` collects the caller's own grants,
-- returned in the reply; other sessions' are kept until taken (K) and
-- announced on their wake channel, and so are the caller's own when `mine`
-- is nil.
local function grant_queue(host, limit, mine)
  if in_grace then return end
  local used = used_of(host)
  local queue = hk(host, 'queue')
  while used < limit do
    local head = redis.call('ZRANGE', queue, 0, 0)
    if #head == 0 then break end
    redis.call('ZREM', queue, head[1])
    local sp = string.find(head[1], ' ', 1, true)
    local session = string.sub(head[1], 1, sp - 1)
    local ticket = string.sub(head[1], sp + 1)
    if alive(session) then
      add_queued(host, session, -1)
      add_held(host, session, 1)
      used = used + 1
      if session == me and mine then
        mine[#mine + 1] = ticket
      else
        local granted = redis.call('HGET', hk(host, 'granted'), session)
        if granted then granted = granted .. ' ' .. ticket else granted = ticket end
        redis.call('HSET', hk(host, 'granted'), session, granted)
        redis.call('PUBLISH', P .. 'wake:' .. session, host .. ' ' .. ticket)
      end
    end
  end
end

local dirty = {}

-- Sessions whose lease ran out give everything back (a few per call: the
-- rest go on the next ones).
local dead = redis.call('ZRANGEBYSCORE', P .. 'sessions', '-inf', now, 'LIMIT', 0, 32)
for _, session in ipairs(dead) do forget_session(session, dirty) end
if drop ~= '' then forget_session(drop, dirty) end

-- Hosts where a dead or dropped session freed slots: wake their waiters.
local function wake_dirty()
  for host, _ in pairs(dirty) do
    local limit = tonumber(redis.call('GET', hk(host, 'limit')) or '0')
    grant_queue(host, limit, nil)
  end
end

local replies = {}
local groups = tonumber(ARGV[8])
if drop == me then groups = 0 else  -- a farewell: the caller leaves
  if ARGV[7] == '1' and not redis.call('ZSCORE', P .. 'sessions', me) then
    -- The caller's slots were given back without its knowing (a pause past
    -- its lease, or Redis lost them): recreating the session empty would
    -- let it hold slots nobody counts. It must register anew.
    wake_dirty()
    return {'LOST', epoch}
  end
  redis.call('ZADD', P .. 'sessions', now + ttl, me)
end
if info ~= '' and drop ~= me then redis.call('HSET', P .. 'sinfo', me, info) end

local i = 9
for _ = 1, groups do
  local host = ARGV[i]
  local limit = tonumber(ARGV[i + 1])
  local n = tonumber(ARGV[i + 2])
  i = i + 3
  redis.call('SET', hk(host, 'limit'), limit, 'PX', math.max(ttl * 6, 600000))
  redis.call('ZADD', P .. 'hosts', now, host)
  redis.call('SADD', P .. 'shosts:' .. me, host)
  local mine = {}
  local acquires = {}
  for _ = 1, n do
    local op = ARGV[i]
    local arg = ARGV[i + 1]
    i = i + 2
    if op == 'A' then
      acquires[#acquires + 1] = arg
    elseif op == 'R' then
      add_held(host, me, -tonumber(arg))
    elseif op == 'V' then
      -- Grants stored and not yet taken are in holders, not yet in the
      -- caller's count: set them aside.
      local counted = tonumber(redis.call('HGET', hk(host, 'holders'), me) or '0')
      local stored = redis.call('HGET', hk(host, 'granted'), me)
      for _ in string.gmatch(stored or '', '%S+') do counted = counted - 1 end
      if counted < tonumber(arg) then behind = true end
    elseif op == 'S' then
      if tonumber(arg) > 0 then
        redis.call('HSET', hk(host, 'holders'), me, arg)
      else
        redis.call('HDEL', hk(host, 'holders'), me)
      end
    elseif op == 'K' or op == 'C' then
      local granted = redis.call('HGET', hk(host, 'granted'), me)
      local rest, found = remove_word(granted, arg)
      if found then
        if rest == '' then
          redis.call('HDEL', hk(host, 'granted'), me)
        else
          redis.call('HSET', hk(host, 'granted'), me, rest)
        end
        if op == 'C' then add_held(host, me, -1) end
      elseif op == 'K' then
        behind = true
      else
        if redis.call('ZREM', hk(host, 'queue'), me .. ' ' .. arg) == 1 then
          add_queued(host, me, -1)
        end
      end
    end
  end
  -- Slots freed above go to those already waiting, before any newcomer.
  grant_queue(host, limit, mine)
  dirty[host] = nil
  if #acquires > 0 then
    local queue = hk(host, 'queue')
    local used = used_of(host)
    for _, ticket in ipairs(acquires) do
      if not in_grace and used < limit and redis.call('ZCARD', queue) == 0 then
        add_held(host, me, 1)
        used = used + 1
        mine[#mine + 1] = ticket
      else
        redis.call('ZADD', queue, redis.call('INCR', P .. 'seq'), me .. ' ' .. ticket)
        add_queued(host, me, 1)
      end
    end
  end
  local reply = {host, used_of(host), waiting_of(host), limit,
                 tonumber(redis.call('HGET', hk(host, 'holders'), me) or '0'), #mine}
  for _, ticket in ipairs(mine) do reply[#reply + 1] = ticket end
  local stored = redis.call('HGET', hk(host, 'granted'), me)
  if stored then
    for w in string.gmatch(stored, '%S+') do reply[#reply + 1] = w end
  end
  replies[#replies + 1] = reply
  if reply[5] == 0 and redis.call('HEXISTS', hk(host, 'queued'), me) == 0
      and redis.call('HEXISTS', hk(host, 'granted'), me) == 0 then
    redis.call('SREM', P .. 'shosts:' .. me, host)
  end
end
redis.call('ZREMRANGEBYSCORE', P .. 'hosts', '-inf', now - 3600000)

wake_dirty()

if behind then
  -- Applied all the same: what the caller gave back is free, and dropping
  -- this session (the caller's next call) takes back whatever Redis still
  -- counts for it, before the caller registers what it really holds.
  return {'BEHIND', epoch}
end

local grace_left = 0
if in_grace then grace_left = grace_until - now end
return {'OK', epoch, grace_left, replies}
