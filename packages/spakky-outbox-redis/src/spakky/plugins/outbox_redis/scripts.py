"""Lua scripts that implement the outbox over hashes and sorted sets.

Every key lives under one prefix ``P`` containing a Redis Cluster hash tag, so
all of them share one slot. The scripts build key names from that prefix
(``ARGV[1]``); ``KEYS[1]`` is always the outbox's ``pending`` key so cluster
clients route the call to the slot's node. The outbox's own keys sit under
``O = P:_outbox``:

- ``O:seq``        counter giving every message its position (save order).
- ``O:msg:<id>``   HASH with the message fields and its state.
- ``O:pending``    ZSET (score = seq): every undelivered message.
- ``O:free``       ZSET (score = seq): claimable keyless messages.
- ``O:key:<pk>``   ZSET (score = seq): the undelivered messages of one partition key.
- ``O:heads``      ZSET (score = seq of the head, member = pk): keys whose oldest
  undelivered message is claimable.
- ``O:inflight``   ZSET (score = claim deadline, ms): claimed messages.
- ``O:delayed``    ZSET (score = not-before, ms): messages waiting for a retry.
- ``O:dead``       ZSET (score = seq): abandoned messages.
- ``O:published``  ZSET (score = published time, ms): delivered messages.
- ``O:wake``       ZSET relays block on (BZPOPMIN) to wake up after a save.
- ``O:figures``    ZSET (score = window end, ms; member = the window as JSON): the
  relays' own figures, trimmed by every write to the retention.

Every script costs O(batch · log n) whatever the backlog: lanes are read in
windows of the batch size, a key's queue is a sorted set (a requeued message
goes back to its place, a follower is found, in O(log n)), and lapsed claims
and due retries are swept at most ``sweep`` per claim. Times come from Redis
``TIME`` so that relays on several hosts agree.

Messages go back to the client as one framed string (``<length>:<bytes>``,
``-`` for an absent field): the id and `MESSAGE_FIELDS` of each, after the
server time.
"""

from spakky.plugins.outbox_redis.codec import LISTED_FIELDS, MESSAGE_FIELDS
from spakky.plugins.outbox_redis.config import OUTBOX_SEGMENT


def _field_index(name: str) -> int:
    return MESSAGE_FIELDS.index(name) + 1


_COMMON = f"""
local p = ARGV[1]
local o = p .. ':{OUTBOX_SEGMENT}'
local free, heads, pending = o .. ':free', o .. ':heads', o .. ':pending'
local inflight, delayed = o .. ':inflight', o .. ':delayed'
local FIELDS = {{{", ".join(f"'{name}'" for name in MESSAGE_FIELDS)}}}
local F_KEY, F_CLAIMED = {_field_index("partition_key")}, {_field_index("claimed_at")}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function mkey(id) return o .. ':msg:' .. id end
local function kkey(pk) return o .. ':key:' .. pk end
local function live(set, id, now)
  local score = redis.call('ZSCORE', set, id)
  return score and tonumber(score) > now
end
-- a key is in heads exactly while its oldest undelivered message is claimable
local function promote(pk, now)
  local head = redis.call('ZRANGE', kkey(pk), 0, 0, 'WITHSCORES')
  if #head == 0 or live(inflight, head[1], now) or live(delayed, head[1], now) then
    redis.call('ZREM', heads, pk)
  else
    redis.call('ZADD', heads, head[2], pk)
  end
end
-- a message nobody holds any more goes back to its lane
local function claimable(id, now)
  local f = redis.call('HMGET', mkey(id), 'seq', 'partition_key')
  if not f[1] then return end
  if f[2] then promote(f[2], now) else redis.call('ZADD', free, f[1], id) end
end
-- variadic ZADD / ZREM in slices, one call per thousand members rather than one each
local function zadd_all(key, flat)
  for i = 1, #flat, 2000 do redis.call('ZADD', key, unpack(flat, i, math.min(i + 1999, #flat))) end
end
local function zrem_all(key, ids)
  for i = 1, #ids, 1000 do redis.call('ZREM', key, unpack(ids, i, math.min(i + 999, #ids))) end
end
local out, n_out = {{}}, 0
local function put(v)
  if v then
    out[n_out + 1] = #v
    out[n_out + 2] = ':'
    out[n_out + 3] = v
    n_out = n_out + 3
  else
    n_out = n_out + 1
    out[n_out] = '-'
  end
end
local function put_message(id, f)
  put(id)
  for i = 1, #FIELDS do put(f[i]) end
end
"""

SAVE = f"""
local o = ARGV[1] .. ':{OUTBOX_SEGMENT}'
local id = ARGV[2]
local mk = o .. ':msg:' .. id
if redis.call('EXISTS', mk) == 1 then return 0 end
local seq = redis.call('INCR', o .. ':seq')
redis.call('HSET', mk, 'event_name', ARGV[3], 'payload', ARGV[4], 'headers', ARGV[5],
  'created_at', ARGV[6], 'retry_count', ARGV[7], 'seq', seq)
if ARGV[8] == '1' then
  local kk = o .. ':key:' .. ARGV[9]
  redis.call('HSET', mk, 'partition_key', ARGV[9])
  redis.call('ZADD', kk, seq, id)
  if redis.call('ZCARD', kk) == 1 then redis.call('ZADD', o .. ':heads', seq, ARGV[9]) end
else
  redis.call('ZADD', o .. ':free', seq, id)
end
redis.call('ZADD', o .. ':pending', seq, id)
redis.call('ZADD', o .. ':wake', 0, 'wake')
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
local hold = tonumber(ARGV[4])
local owner = ARGV[5]
local sweep = tonumber(ARGV[6])
local run = tonumber(ARGV[7])
local max_bytes = tonumber(ARGV[8])
local now = now_ms()
-- lanes are read in windows of ``limit``; a few windows skip entries whose
-- budget is spent without ever reading more than a few batches
local WINDOWS = 4

-- lapsed claims and due retries become claimable again
for _, id in ipairs(redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, sweep)) do
  redis.call('ZREM', inflight, id)
  redis.call('HDEL', mkey(id), 'owner')
  claimable(id, now)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, sweep)) do
  redis.call('ZREM', delayed, id)
  claimable(id, now)
end

-- a candidate is judged on its retry budget and its payload's length (HSTRLEN,
-- O(1)): only the messages the claim keeps have their fields read, so the
-- byte budget is decided without loading a payload
local function size(id)
  if tonumber(redis.call('HGET', mkey(id), 'retry_count') or '0') >= max_retry then return nil end
  return redis.call('HSTRLEN', mkey(id), 'payload')
end

-- keyless lane: the oldest claimable messages
local cands = {}
local offset = 0
for _ = 1, WINDOWS do
  if #cands >= limit then break end
  local window = redis.call('ZRANGE', free, offset, offset + limit - 1, 'WITHSCORES')
  if #window == 0 then break end
  for i = 1, #window, 2 do
    if #cands >= limit then break end
    local bytes = size(window[i])
    if bytes then cands[#cands + 1] = {tonumber(window[i + 1]), window[i], bytes, false} end
  end
  offset = offset + limit
end

-- keyed lane: whole runs (each key's claimable prefix, at most ``run``), key
-- after key by the age of their heads, until the batch is full
local keyed = 0
offset = 0
for _ = 1, WINDOWS do
  if keyed >= limit then break end
  local window = redis.call('ZRANGE', heads, offset, offset + limit - 1)
  if #window == 0 then break end
  for _, pk in ipairs(window) do
    if keyed >= limit then break end
    local members = redis.call('ZRANGE', kkey(pk), 0, math.min(run, limit - keyed) - 1, 'WITHSCORES')
    for i = 1, #members, 2 do
      local id = members[i]
      if live(inflight, id, now) or live(delayed, id, now) then break end
      local bytes = size(id)
      if not bytes then break end
      cands[#cands + 1] = {tonumber(members[i + 1]), id, bytes, i == 1 and pk}
      keyed = keyed + 1
    end
  end
  offset = offset + limit
end

-- merged by position and cut at ``limit``, or before the first message that
-- would pass the byte budget (the first always stays: a larger message goes
-- alone): a cut prefix keeps each key's part a prefix
table.sort(cands, function(a, b) return a[1] < b[1] end)
local stamp = tostring(now)
put(stamp)
local deadlines, keyless, keyed_ids, taken_keys = {}, {}, {}, {}
local total = 0
for i = 1, math.min(limit, #cands) do
  local c = cands[i]
  total = total + c[3]
  if i > 1 and total > max_bytes then break end
  local id = c[2]
  local f = redis.call('HMGET', mkey(id), unpack(FIELDS))
  deadlines[#deadlines + 1] = now + hold
  deadlines[#deadlines + 1] = id
  if f[F_KEY] then
    keyed_ids[#keyed_ids + 1] = id
    if c[4] then taken_keys[#taken_keys + 1] = c[4] end
  else
    keyless[#keyless + 1] = id
  end
  redis.call('HSET', mkey(id), 'owner', owner, 'claimed_at', now)
  f[F_CLAIMED] = stamp
  put_message(id, f)
end
zadd_all(inflight, deadlines)
zrem_all(free, keyless)
zrem_all(delayed, keyed_ids)
zrem_all(heads, taken_keys)
return table.concat(out)
"""
)
"""Claim up to ``limit`` messages for ``owner``.

ARGV: prefix, limit, max_retry, hold ms (the first lease: the shorter of
lease and claim timeout), owner token, how many lapsed claims to sweep, key
run length, payload bytes the claim may hold (``batch_max_bytes``; the
first message is claimed whatever its size). Returns the framed server time
and messages.
"""

SETTLE = (
    _COMMON
    + """
local owner = ARGV[2]
local mode = ARGV[3]
local delay = tonumber(ARGV[4])
local err = ARGV[5]
local has_err = ARGV[6] == '1'
local now = now_ms()
local done = 0
local touched = {}

-- drop this owner's claims on the messages right behind ``seq`` in a key: they
-- may not be published before it (this owner's claims there are contiguous)
local function release_followers(pk, seq)
  local from = '(' .. seq
  while true do
    local window = redis.call('ZRANGEBYSCORE', kkey(pk), from, '+inf', 'WITHSCORES', 'LIMIT', 0, 10)
    if #window == 0 then return end
    for i = 1, #window, 2 do
      local nid = window[i]
      if redis.call('HGET', mkey(nid), 'owner') ~= owner then return end
      redis.call('ZREM', inflight, nid)
      redis.call('HDEL', mkey(nid), 'owner', 'claimed_at')
      from = '(' .. window[i + 1]
    end
  end
end

local left, landed = {}, {}
for id in string.gmatch(ARGV[7], '[^,]+') do
  local mk = mkey(id)
  local f = redis.call('HMGET', mk, 'owner', 'partition_key', 'seq')
  if f[1] == owner then
    local pk = f[2]
    done = done + 1
    if has_err then redis.call('HSET', mk, 'last_error', err) end
    if mode == 'publish' or mode == 'abandon' then
      left[#left + 1] = id
      if mode == 'publish' then
        redis.call('HSET', mk, 'published_at', now)
        landed[#landed + 1] = now
      else
        redis.call('HSET', mk, 'abandoned_at', now)
        landed[#landed + 1] = f[3]
      end
      landed[#landed + 1] = id
      redis.call('HDEL', mk, 'owner', 'claimed_at')
      if pk then
        touched[pk] = touched[pk] or {}
        table.insert(touched[pk], id)
      end
    elseif mode == 'increment' then
      redis.call('HINCRBY', mk, 'retry_count', 1)
    else
      -- retry or release
      if mode == 'retry' then redis.call('HINCRBY', mk, 'retry_count', 1) end
      redis.call('ZREM', inflight, id)
      redis.call('HDEL', mk, 'owner', 'claimed_at')
      if pk then
        release_followers(pk, f[3])
        touched[pk] = touched[pk] or {}
      end
      if mode == 'retry' and delay > 0 then
        redis.call('ZADD', delayed, now + delay, id)
      elseif not pk then
        redis.call('ZADD', free, f[3], id)
      end
    end
  end
end
-- delivered or given up: out of every lane, into published or dead
zrem_all(inflight, left)
zrem_all(pending, left)
if mode == 'publish' then zadd_all(o .. ':published', landed) else zadd_all(o .. ':dead', landed) end
for pk, gone in pairs(touched) do zrem_all(kkey(pk), gone) end
for pk in pairs(touched) do promote(pk, now) end
return done
"""
)
"""Acknowledge, retry, abandon or release messages this owner holds.

ARGV: prefix, owner token, mode (publish, abandon, increment, retry, release),
retry delay ms, error text, has-error flag, ids joined by commas (one argument
is cheaper to send than a hundred). Messages whose claim this owner no longer
holds are left untouched (fencing). Returns how many were settled.
"""

RENEW = (
    _COMMON
    + """
local owner = ARGV[2]
local timeout = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local now = now_ms()
local renewed = 0
for id in string.gmatch(ARGV[5], '[^,]+') do
  local f = redis.call('HMGET', mkey(id), 'owner', 'claimed_at')
  if f[1] == owner and f[2] then
    local ends = tonumber(f[2]) + timeout
    if ends > now then
      redis.call('ZADD', inflight, math.min(ends, now + lease), id)
      renewed = renewed + 1
    end
  end
end
return renewed
"""
)
"""Push the lease of the messages this owner holds to now + lease, never past the claim timeout.

ARGV: prefix, owner token, claim timeout ms, lease ms, ids joined by commas. A sweep by any
fetch clears the owner of a lapsed claim, so only claims nobody swept (or took
over) are renewed. Returns how many were renewed.
"""

REQUEUE = (
    _COMMON
    + """
local limit = tonumber(ARGV[2])
local dead = o .. ':dead'
local ids
if ARGV[3] == 'oldest' then
  ids = redis.call('ZRANGE', dead, 0, limit - 1)
else
  ids = {}
  for id in string.gmatch(ARGV[4], '[^,]+') do
    if #ids >= limit then break end
    ids[#ids + 1] = id
  end
end
local now = now_ms()
local scores = {}
for i = 1, #ids, 1000 do
  local chunk = redis.call('ZMSCORE', dead, unpack(ids, i, math.min(i + 999, #ids)))
  for j = 1, #chunk do scores[i + j - 1] = chunk[j] end
end
local back, by_key, keyless = {}, {}, {}
for i, id in ipairs(ids) do
  if scores[i] then
    local mk = mkey(id)
    local f = redis.call('HMGET', mk, 'seq', 'partition_key')
    back[#back + 1] = id
    -- an id without its hash only leaves the dead set: nothing to requeue
    if f[1] then
      redis.call('HDEL', mk, 'abandoned_at', 'owner', 'claimed_at')
      redis.call('HSET', mk, 'retry_count', 0)
      local lane = keyless
      if f[2] then
        by_key[f[2]] = by_key[f[2]] or {}
        lane = by_key[f[2]]
      end
      lane[#lane + 1] = f[1]
      lane[#lane + 1] = id
    end
  end
end
zrem_all(dead, back)
for _, lane in pairs(by_key) do zadd_all(pending, lane) end
zadd_all(pending, keyless)
zadd_all(free, keyless)
-- keyed ones go back to their original place in their key's order
local touched = {}
for pk, lane in pairs(by_key) do
  zadd_all(kkey(pk), lane)
  touched[pk] = true
end
local done = #back
for pk in pairs(touched) do promote(pk, now) end
if done > 0 then redis.call('ZADD', o .. ':wake', 0, 'wake') end
return done
"""
)
"""Make up to ``limit`` abandoned messages pending again with a fresh budget.

ARGV: prefix, limit, 'oldest' or 'ids', ids joined by commas. Returns how many were requeued.
"""

PURGE = f"""
local o = ARGV[1] .. ':{OUTBOX_SEGMENT}'
local published = o .. ':published'
local cutoff = tonumber(ARGV[2])
if ARGV[4] == 'age' then
  local t = redis.call('TIME')
  cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - cutoff
end
local ids = redis.call('ZRANGEBYSCORE', published, '-inf', '(' .. cutoff,
  'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #ids, 1000 do
  local hashes = {{}}
  for j = i, math.min(i + 999, #ids) do hashes[#hashes + 1] = o .. ':msg:' .. ids[j] end
  redis.call('DEL', unpack(hashes))
  redis.call('ZREM', published, unpack(ids, i, math.min(i + 999, #ids)))
end
return #ids
"""
"""Delete up to ARGV[3] messages published before ARGV[2] (ms since the epoch; with
ARGV[4] ``age``: ms before the server's TIME). Returns the count."""

STATS = (
    _COMMON
    + """
local now = now_ms()
local oldest = false
local first = redis.call('ZRANGE', pending, 0, 0)
if #first > 0 then
  oldest = redis.call('HGET', mkey(first[1]), 'created_at') or false
end
return {
  redis.call('ZCARD', pending),
  redis.call('ZCOUNT', inflight, '(' .. now, '+inf'),
  redis.call('ZCARD', o .. ':published'),
  redis.call('ZCARD', o .. ':dead'),
  oldest,
  tostring(now),
}
"""
)
"""Counts by state, the oldest pending ``created_at`` and the server time (ms).

ARGV: prefix. Only live claims (deadline not passed) count as claimed.
"""

LIST_ABANDONED = (
    _COMMON
    + f"""
local LISTED = {{{", ".join(f"'{name}'" for name in LISTED_FIELDS)}}}
put(tostring(now_ms()))
local dead = redis.call('ZRANGEBYSCORE', o .. ':dead', '(' .. ARGV[2], '+inf',
  'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
put(dead[#dead] or ARGV[2])
for i = 1, #dead, 2 do
  local f = redis.call('HMGET', mkey(dead[i]), unpack(LISTED))
  put(dead[i])
  for j = 1, #LISTED do put(f[j]) end
end
return table.concat(out)
"""
)
"""One chunk of the abandoned messages, oldest first, without their payload or headers.

ARGV: prefix, the position (seq) the chunk starts after, most messages. Returns
the server time, the position of the chunk's last message (the next chunk's
start; ARGV[2] when empty), then each message's id and `LISTED_FIELDS`.
"""

_HELD = f"""
local F_PUBLISHED, F_ABANDONED = {_field_index("published_at")}, {_field_index("abandoned_at")}
-- a message framed like a claimed one, then its live claim's owner and deadline and its
-- retry time, each only while it holds and the message is undelivered
local function put_held(id, f, now)
  put_message(id, f)
  local undelivered = not f[F_PUBLISHED] and not f[F_ABANDONED]
  local ends = undelivered and redis.call('ZSCORE', inflight, id)
  if ends and tonumber(ends) > now then
    put(redis.call('HGET', mkey(id), 'owner') or '')
    put(ends)
  else
    put(false)
    put(false)
  end
  local due = undelivered and redis.call('ZSCORE', delayed, id)
  put(due and tonumber(due) > now and due or false)
end
"""

KEY_HEADS = (
    _COMMON
    + _HELD
    + """
local limit, window, now = tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms()
put(tostring(now))
local start = '-inf'
if ARGV[4] ~= '' then
  local seq = redis.call('HGET', mkey(ARGV[4]), 'seq')
  if seq then start = '(' .. seq end
end
local found = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', pending, start, '+inf', 'LIMIT', 0, window)) do
  if found >= limit then break end
  local pk = redis.call('HGET', mkey(id), 'partition_key')
  if pk and redis.call('ZRANGE', kkey(pk), 0, 0)[1] == id then
    put_held(id, redis.call('HMGET', mkey(id), unpack(FIELDS)), now)
    found = found + 1
  end
end
return table.concat(out)
"""
)
"""Heads of up to ARGV[2] keys, oldest first, among the ARGV[3] undelivered messages after the one ARGV[4] ('' : from the oldest).

Each head is framed like a claimed message, then its live claim's owner and
deadline (ms) and its retry time (ms) when in the future (``-`` otherwise).
"""

GET_MESSAGE = (
    _COMMON
    + _HELD
    + """
local now = now_ms()
put(tostring(now))
local f = redis.call('HMGET', mkey(ARGV[2]), unpack(FIELDS))
if f[1] then put_held(ARGV[2], f, now) end
return table.concat(out)
"""
)
"""The message ARGV[2] in whatever state, framed like a key head; only the server time when there is none."""

RELAY_CLAIMS = (
    _COMMON
    + """
local now = now_ms()
put(tostring(now))
for _, id in ipairs(redis.call('ZRANGEBYSCORE', inflight, '(' .. now, '+inf', 'LIMIT', 0, tonumber(ARGV[2]))) do
  put(redis.call('HGET', mkey(id), 'owner') or '')
  put(redis.call('ZSCORE', inflight, id))
end
return table.concat(out)
"""
)
"""The owner and deadline (ms) of up to ARGV[2] live claims, after the server time."""

WRITE_FIGURES = f"""
local figures = ARGV[1] .. ':{OUTBOX_SEGMENT}:figures'
redis.call('ZADD', figures, ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', figures, '-inf', '(' .. ARGV[4])
return 1
"""
"""Add one relay window (ARGV[2], JSON) at its end ARGV[3] (ms), then delete the windows
that ended before ARGV[4] (ms: the retention before it)."""

READ_FIGURES = f"""
return redis.call('ZRANGE', ARGV[1] .. ':{OUTBOX_SEGMENT}:figures', '+inf', '(' .. ARGV[2],
  'BYSCORE', 'REV', 'LIMIT', 0, tonumber(ARGV[3]))
"""
"""Up to ARGV[3] relay windows that ended after ARGV[2] (ms), the latest end first."""
