"""Lua scripts that implement the outbox over hashes, sorted sets and lists.

Every key lives under one prefix containing a Redis Cluster hash tag, so all of
them share one slot. The scripts build key names from that prefix (passed as
``ARGV[1]``); ``KEYS[1]`` is always the prefix's ``ready`` key so that cluster
clients route the call to the right node.

Layout (``P`` is the prefix):

- ``P:seq``        counter giving every message its position.
- ``P:msg:<id>``   HASH with the message fields and its state.
- ``P:ready``      ZSET (score = seq): claimable keyless messages and keys' heads.
- ``P:key:<pk>``   LIST of the undelivered ids of one partition key, oldest first.
- ``P:pending``    ZSET (score = seq): every undelivered message.
- ``P:inflight``   ZSET (score = lease deadline, ms): claimed messages.
- ``P:delayed``    ZSET (score = not-before, ms): messages waiting for a retry.
- ``P:dead``       ZSET (score = seq): abandoned messages.
- ``P:published``  ZSET (score = published time, ms): delivered messages.
- ``P:marker``     ZSET relays block on (BZPOPMIN) to wake up after a save.

Times come from Redis ``TIME`` so that relays on several hosts agree.
"""

_COMMON = """
local p = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function mkey(id) return p .. ':msg:' .. id end
local function kkey(pk) return p .. ':key:' .. pk end
local function is_head(id, pk)
  return redis.call('LINDEX', kkey(pk), 0) == id
end
-- put a message back among the claimable ones if it may be claimed on its own
local function make_ready(id)
  local fields = redis.call('HMGET', mkey(id), 'seq', 'partition_key')
  if not fields[1] then return end
  if (not fields[2]) or is_head(id, fields[2]) then
    redis.call('ZADD', p .. ':ready', fields[1], id)
  end
end
-- the head of a key, once free, becomes claimable
local function promote(pk)
  local head = redis.call('LINDEX', kkey(pk), 0)
  if not head then return end
  if redis.call('ZSCORE', p .. ':inflight', head) then return end
  if redis.call('ZSCORE', p .. ':delayed', head) then return end
  local seq = redis.call('HGET', mkey(head), 'seq')
  if seq then redis.call('ZADD', p .. ':ready', seq, head) end
end
-- take a message out of every lane it may sit in
local function unlane(id)
  redis.call('ZREM', p .. ':ready', id)
  redis.call('ZREM', p .. ':inflight', id)
  redis.call('ZREM', p .. ':delayed', id)
end
"""

SAVE = """
local p = ARGV[1]
local id = ARGV[2]
local mk = p .. ':msg:' .. id
if redis.call('EXISTS', mk) == 1 then return 0 end
local seq = redis.call('INCR', p .. ':seq')
redis.call('HSET', mk, 'id', id, 'event_name', ARGV[3], 'payload', ARGV[4],
  'headers', ARGV[5], 'created_at', ARGV[6], 'retry_count', ARGV[7], 'seq', seq)
if ARGV[8] == '1' then
  redis.call('HSET', mk, 'partition_key', ARGV[9])
  if redis.call('RPUSH', p .. ':key:' .. ARGV[9], id) == 1 then
    redis.call('ZADD', p .. ':ready', seq, id)
  end
else
  redis.call('ZADD', p .. ':ready', seq, id)
end
redis.call('ZADD', p .. ':pending', seq, id)
redis.call('ZADD', p .. ':marker', 0, 'wake')
return 1
"""
"""Store one message; queued inside the caller's MULTI. Cannot fail on valid input.

ARGV: prefix, id, event_name, payload, headers JSON, created_at ISO,
retry_count, has-partition-key flag ('1'/'0'), partition key.
"""

FETCH = (
    _COMMON
    + """
local limit = tonumber(ARGV[2])
local max_retry = tonumber(ARGV[3])
local timeout = tonumber(ARGV[4])
local owner = ARGV[5]
local retention = tonumber(ARGV[6])
local sweep = tonumber(ARGV[7])
local now = now_ms()
local ready = p .. ':ready'
local inflight = p .. ':inflight'
local delayed = p .. ':delayed'

-- expired leases and due retries become claimable again
for _, id in ipairs(redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, sweep)) do
  redis.call('ZREM', inflight, id)
  redis.call('HDEL', mkey(id), 'owner', 'claimed_at')
  make_ready(id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, sweep)) do
  redis.call('ZREM', delayed, id)
  make_ready(id)
end
redis.call('ZREMRANGEBYSCORE', p .. ':published', '-inf', now - retention)

local function spent(id)
  local rc = redis.call('HGET', mkey(id), 'retry_count')
  return (not rc) or tonumber(rc) >= max_retry
end

-- candidates: ready entries (oldest first), then for keyed heads the free
-- prefix of the messages queued behind them. Followers are gathered only
-- while fewer than ``limit`` candidates exist, so one claim reads O(limit)
-- entries however long the keys are.
local cands = {}
local keyed = {}
local offset = 0
local windows = 0
while #cands < limit and windows < 8 do
  local window = redis.call('ZRANGE', ready, offset, offset + limit - 1, 'WITHSCORES')
  if #window == 0 then break end
  for i = 1, #window, 2 do
    local id = window[i]
    if #cands < limit and not spent(id) then
      cands[#cands + 1] = {tonumber(window[i + 1]), id}
      local pk = redis.call('HGET', mkey(id), 'partition_key')
      if pk then keyed[#keyed + 1] = pk end
    end
  end
  offset = offset + limit
  windows = windows + 1
end
local budget = limit
for _, pk in ipairs(keyed) do
  if budget <= 0 then break end
  local followers = redis.call('LRANGE', kkey(pk), 1, math.min(budget, limit - 1))
  for _, nid in ipairs(followers) do
    if spent(nid) then break end
    local lease = redis.call('ZSCORE', inflight, nid)
    if lease and tonumber(lease) > now then break end
    local nb = redis.call('ZSCORE', delayed, nid)
    if nb and tonumber(nb) > now then break end
    cands[#cands + 1] = {tonumber(redis.call('HGET', mkey(nid), 'seq')), nid}
    budget = budget - 1
  end
end
table.sort(cands, function(a, b) return a[1] < b[1] end)

local out = {}
for i = 1, math.min(limit, #cands) do
  local id = cands[i][2]
  unlane(id)
  redis.call('ZADD', inflight, now + timeout, id)
  redis.call('HSET', mkey(id), 'owner', owner, 'claimed_at', now)
  out[#out + 1] = redis.call('HGETALL', mkey(id))
end
return out
"""
)
"""Claim up to ``limit`` messages for ``owner``.

ARGV: prefix, limit, max_retry, claim timeout ms, owner token, published
retention ms, how many expired leases to sweep. Returns HGETALL lists.
"""

SETTLE = (
    _COMMON
    + """
local owner = ARGV[2]
local mode = ARGV[3]
local retention = tonumber(ARGV[4])
local delay = tonumber(ARGV[5])
local err = ARGV[6]
local has_err = ARGV[7] == '1'
local now = now_ms()
local done = 0

-- drop this owner's claims on the messages queued behind ``id`` in its key:
-- they may not be published before ``id``
local function release_followers(id, pk)
  local pos = redis.call('LPOS', kkey(pk), id)
  if not pos then return end
  for _, nid in ipairs(redis.call('LRANGE', kkey(pk), pos + 1, pos + 1000)) do
    if redis.call('HGET', mkey(nid), 'owner') == owner then
      redis.call('ZREM', p .. ':inflight', nid)
      redis.call('HDEL', mkey(nid), 'owner', 'claimed_at')
    end
  end
end

for i = 8, #ARGV do
  local id = ARGV[i]
  local mk = mkey(id)
  local fields = redis.call('HMGET', mk, 'owner', 'partition_key', 'seq')
  if fields[1] == owner then
    local pk = fields[2]
    done = done + 1
    if has_err then redis.call('HSET', mk, 'last_error', err) end
    if mode == 'publish' or mode == 'abandon' then
      unlane(id)
      redis.call('ZREM', p .. ':pending', id)
      redis.call('HDEL', mk, 'owner', 'claimed_at')
      if mode == 'publish' then
        redis.call('HSET', mk, 'published_at', now)
        redis.call('ZADD', p .. ':published', now, id)
        redis.call('PEXPIRE', mk, retention)
      else
        redis.call('HSET', mk, 'abandoned_at', now)
        redis.call('ZADD', p .. ':dead', fields[3], id)
      end
      if pk then
        redis.call('LREM', kkey(pk), 1, id)
        promote(pk)
      end
    elseif mode == 'increment' then
      redis.call('HINCRBY', mk, 'retry_count', 1)
    elseif mode == 'retry' or mode == 'release' then
      if mode == 'retry' then redis.call('HINCRBY', mk, 'retry_count', 1) end
      if pk then release_followers(id, pk) end
      redis.call('ZREM', p .. ':inflight', id)
      redis.call('HDEL', mk, 'owner', 'claimed_at')
      if mode == 'retry' and delay > 0 then
        redis.call('ZADD', p .. ':delayed', now + delay, id)
      else
        make_ready(id)
      end
    end
  end
end
return done
"""
)
"""Acknowledge, retry, abandon or release messages this owner holds.

ARGV: prefix, owner token, mode (publish, abandon, increment, retry, release),
published retention ms, retry delay ms, error text, has-error flag, ids...
Messages whose claim this owner no longer holds are left untouched (fencing).
Returns how many messages were settled.
"""

REQUEUE = (
    _COMMON
    + """
local ids = {}
if ARGV[2] == 'all' then
  ids = redis.call('ZRANGE', p .. ':dead', 0, -1)
else
  for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local done = 0
for _, id in ipairs(ids) do
  if redis.call('ZSCORE', p .. ':dead', id) then
    local mk = mkey(id)
    local fields = redis.call('HMGET', mk, 'seq', 'partition_key')
    local seq = tonumber(fields[1])
    redis.call('ZREM', p .. ':dead', id)
    redis.call('HDEL', mk, 'abandoned_at', 'owner', 'claimed_at')
    redis.call('HSET', mk, 'retry_count', 0)
    redis.call('ZADD', p .. ':pending', seq, id)
    local pk = fields[2]
    if pk then
      -- re-enter the key's queue at its original position
      local kk = kkey(pk)
      local old_head = redis.call('LINDEX', kk, 0)
      local placed = false
      for _, other in ipairs(redis.call('LRANGE', kk, 0, -1)) do
        if tonumber(redis.call('HGET', mkey(other), 'seq')) > seq then
          redis.call('LINSERT', kk, 'BEFORE', other, id)
          placed = true
          break
        end
      end
      if not placed then redis.call('RPUSH', kk, id) end
      if old_head and redis.call('LINDEX', kk, 0) ~= old_head then
        redis.call('ZREM', p .. ':ready', old_head)
      end
      promote(pk)
    else
      redis.call('ZADD', p .. ':ready', seq, id)
    end
    done = done + 1
  end
end
if done > 0 then redis.call('ZADD', p .. ':marker', 0, 'wake') end
return done
"""
)
"""Make abandoned messages pending again with a fresh budget.

ARGV: prefix, 'all' or 'ids', ids... Returns how many were requeued.
"""

PURGE = """
local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p .. ':published', '-inf', '(' .. ARGV[2],
  'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('DEL', p .. ':msg:' .. id)
  redis.call('ZREM', p .. ':published', id)
end
return #ids
"""
"""Delete up to ARGV[3] messages published before ARGV[2] (ms). Returns the count."""

STATS = (
    _COMMON
    + """
local retention = tonumber(ARGV[2])
local now = now_ms()
local oldest = false
local first = redis.call('ZRANGE', p .. ':pending', 0, 0)
if #first > 0 then
  oldest = redis.call('HGET', mkey(first[1]), 'created_at') or false
end
return {
  redis.call('ZCARD', p .. ':pending'),
  redis.call('ZCOUNT', p .. ':inflight', '(' .. now, '+inf'),
  redis.call('ZCOUNT', p .. ':published', '(' .. (now - retention), '+inf'),
  redis.call('ZCARD', p .. ':dead'),
  oldest,
  tostring(now),
}
"""
)
"""Counts by state, the oldest pending ``created_at`` and the server time (ms).

ARGV: prefix, published retention ms.
"""
