-- accept.lua — durably append a message to a conversation's inbox, and take the lease if it is free.
--
-- KEYS[1]  meta hash          sf:{tenant:id}:m
-- KEYS[2]  history list       sf:{tenant:id}:h
-- KEYS[3]  state string       sf:{tenant:id}:s
-- KEYS[4]  inbox list         sf:{tenant:id}:i
-- KEYS[5]  lease-expiry hints sf:leases:<shard> — a fleet-wide sorted set OUTSIDE the conversation's slot.
--          Standalone Redis and Sentinel allow that; Redis Cluster would need it routed separately (not
--          supported yet).
-- KEYS[6]  pending counts     sf:pending:<shard> — fleet-wide hash (member -> inbox length), OUTSIDE the slot
--          like KEYS[5]
-- Receipts sf:{tenant:id}:r:<created>:<name> are built from ARGV[13]; they share the conversation's slot.
--
-- ARGV[1]  message id
-- ARGV[2]  the message as an inbox entry (see _prelude.lua)
-- ARGV[3]  receipt name of its idempotency key, 'k:<key>', or '' when it has none
-- ARGV[4]  pending receipt for the message id (JSON)
-- ARGV[5]  the caller's agent version
-- ARGV[6]  the caller's instance id (lease owner if it takes the lease)
-- ARGV[7]  double-texting policy: 'enqueue' | 'reject' | 'interrupt'
-- ARGV[8]  lease ttl, ms
-- ARGV[9]  conversation idle ttl, ms
-- ARGV[10] idempotency receipt ttl, ms
-- ARGV[11] message receipt ttl, ms
-- ARGV[12] inbox capacity
-- ARGV[13] receipt key prefix sf:{tenant:id}:r:
-- ARGV[14] hint member 'tenant:id'
--
-- Returns one of
--   {'D', receipt}              the idempotency key was seen before; nothing accepted
--   {'W', version}              pinned to another version; nothing accepted
--   {'R', owner|nil}            policy reject while busy, or inbox full; nothing accepted
--   {'Q', owner}                queued behind a live lease
--   {'L', token, attempt, turns, version, state|nil, head body|nil, history...}
--                               leased; head body is nil when the head is this very message

local meta, hist, state, inbox, hints = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, entry, kname = ARGV[1], ARGV[2], ARGV[3]
local version, owner, policy = ARGV[5], ARGV[6], ARGV[7]
local receipts = ARGV[13]
local now_ms, now_us = clock()

local r = redis.call('HMGET', meta, 'v', 'c', 'n', 'f', 'o', 'x', 'p')
local v, created, holder = r[1], r[2], r[5]
if created and kname ~= '' then
  local seen = redis.call('GET', receipts .. created .. ':' .. kname)
  if seen then
    return {'D', seen}
  end
end
if v and v ~= version then
  return {'W', v}
end

local live = holder and tonumber(r[6] or 0) > now_ms
local depth = 0
if v then
  depth = redis.call('LLEN', inbox)
end
if (policy == 'reject' and (live or depth > 0)) or depth >= tonumber(ARGV[12]) then
  return {'R', holder}
end

local fence = tonumber(r[4] or 0)
if v then
  redis.call('HSET', meta, 'a', int(now_us))
else
  -- A new conversation (or a new incarnation of an expired one: drop anything it left behind). Its fencing
  -- tokens start at its creation time in µs, above every token of an earlier incarnation.
  redis.call('DEL', hist, state, inbox)
  created = int(now_us)
  fence = now_us
  redis.call('HSET', meta, 'v', version, 'c', created, 'a', created, 'n', 0, 'f', created, 'p', 0)
end
redis.call('RPUSH', inbox, entry)
count_pending(KEYS[6], ARGV[14], inbox)
if kname ~= '' then
  local _, _, prefix = split_entry(entry)
  redis.call('SET', receipts .. created .. ':' .. kname, prefix .. '"pending",null]', 'PX', ARGV[10])
end

if not live then
  local attempt, head = tonumber(r[7] or 0), false
  if depth == 0 then
    attempt = 0
  else
    -- The head is an older message a dead owner left; ours waits behind it, so its caller polls.
    head = redis.call('LINDEX', inbox, 0)
    redis.call('SET', receipts .. created .. ':m:' .. id, ARGV[4], 'PX', ARGV[11])
  end
  attempt = attempt + 1
  local token = fence + 1
  local expiry = now_ms + tonumber(ARGV[8])
  redis.call('HSET', meta, 'f', int(token), 't', int(token), 'o', owner, 'x', int(expiry), 'p', attempt)
  redis.call('HDEL', meta, 'I')
  redis.call('ZADD', hints, expiry, ARGV[14])
  touch(ARGV[9], meta, hist, state, inbox)
  return work('L', token, attempt, tonumber(r[3] or 0), version, head, hist, state)
end

redis.call('SET', receipts .. created .. ':m:' .. id, ARGV[4], 'PX', ARGV[11])
if policy == 'interrupt' then
  redis.call('HSET', meta, 'I', 1)
end
touch(ARGV[9], meta, hist, state, inbox)
return {'Q', holder}
