-- reclaim.lua — take over the lease of a conversation whose owner stopped renewing it, with a new token.
-- A message started max-attempts times without committing fails instead of running again.
--
-- KEYS[1]  meta hash          sf:{tenant:id}:m
-- KEYS[2]  history list       sf:{tenant:id}:h
-- KEYS[3]  state string       sf:{tenant:id}:s
-- KEYS[4]  inbox list         sf:{tenant:id}:i
-- KEYS[5]  event stream       sf:{tenant:id}:e
-- KEYS[6]  lease-expiry hints sf:leases:<shard> — OUTSIDE the conversation's slot (fine on standalone and
--          Sentinel; Redis Cluster would need it routed separately — not supported yet).
-- KEYS[7]  pending counts     sf:pending:<shard> — fleet-wide hash (member -> inbox length), OUTSIDE the slot
--          like KEYS[6]
-- Receipts sf:{tenant:id}:r:<created>:<name> are built from ARGV[9]; they share the conversation's slot.
--
-- ARGV[1]  the new lease owner (the caller's instance id)
-- ARGV[2]  lease ttl, ms
-- ARGV[3]  conversation idle ttl, ms
-- ARGV[4]  idempotency receipt ttl, ms
-- ARGV[5]  message receipt ttl, ms
-- ARGV[6]  max attempts
-- ARGV[7]  event log length
-- ARGV[8]  event log ttl, ms
-- ARGV[9]  receipt key prefix sf:{tenant:id}:r:
-- ARGV[10] hint member 'tenant:id'
-- ARGV[11] outcome receipt ttl, ms (a failed message's receipt, when no waiter made one)
--
-- Returns {'-'} when there is nothing to take over, else
--   {'T:' .. previous owner (or ''), token, attempt, turns, version, state|nil, head body, history...}

local meta, hist, state, inbox, events, hints = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local owner, member = ARGV[1], ARGV[10]
local conversation_ttl = ARGV[3]

local r = redis.call('HMGET', meta, 'v', 'c', 'n', 'f', 'o', 'x', 'p')
local v, created, holder = r[1], r[2], r[5]
if not v then
  -- Gone (deleted, or expired with its inbox): drop what the fleet-wide indexes still say about it.
  redis.call('ZREM', hints, member)
  redis.call('HDEL', KEYS[7], member)
  return {'-'}
end
local now_ms = clock()
local expires = tonumber(r[6] or 0)
if holder and expires > now_ms then
  redis.call('ZADD', hints, expires, member)
  return {'-'}
end
local depth = redis.call('LLEN', inbox)
if depth == 0 then
  redis.call('ZREM', hints, member)
  redis.call('HDEL', KEYS[7], member)
  if holder then
    redis.call('HDEL', meta, 'o', 'x')
    touch(conversation_ttl, meta, hist, state, inbox)
  end
  return {'-'}
end

local attempts, max_attempts = tonumber(r[7] or 0), tonumber(ARGV[6])
local receipts = ARGV[9] .. created .. ':'
local failed = 0
while depth > 0 and attempts >= max_attempts do
  -- A message that keeps killing its instance must not block the conversation forever.
  local id, kname, prefix = split_entry(redis.call('LPOP', inbox))
  depth = depth - 1
  attempts = 0
  failed = failed + 1
  local err = '{"code":"too_many_attempts","message":' .. cjson.encode(
    "message '" .. id .. "' was started " .. ARGV[6] .. ' times without committing; giving up') .. '}'
  local receipt = prefix .. '"failed",{"error":' .. err .. '}]'
  if kname ~= '' then
    redis.call('SET', receipts .. kname, receipt, 'PX', ARGV[4])
  end
  if not redis.call('SET', receipts .. 'm:' .. id, receipt, 'PX', ARGV[5], 'XX') then
    redis.call('SET', receipts .. 'm:' .. id, receipt, 'PX', ARGV[11])
  end
  redis.call('XADD', events, 'MAXLEN', ARGV[7], '*', 'd',
    '{"type":"error","message_id":' .. cjson.encode(id) .. ',' .. string.sub(err, 2))
end
if failed > 0 then
  redis.call('PEXPIRE', events, ARGV[8])
  count_pending(KEYS[7], member, inbox)
end
if depth == 0 then
  redis.call('HDEL', meta, 'o', 'x')
  redis.call('HSET', meta, 'p', 0)
  redis.call('ZREM', hints, member)
  touch(conversation_ttl, meta, hist, state, inbox)
  return {'-'}
end

local token = tonumber(r[4] or 0) + 1
local attempt = attempts + 1
local expiry = now_ms + tonumber(ARGV[2])
redis.call('HSET', meta, 'f', int(token), 't', int(token), 'o', owner, 'x', int(expiry), 'p', attempt)
redis.call('HDEL', meta, 'I')
redis.call('ZADD', hints, expiry, member)
touch(conversation_ttl, meta, hist, state, inbox)
return work('T:' .. (holder or ''), token, attempt, tonumber(r[3] or 0), v, redis.call('LINDEX', inbox, 0),
  hist, state)
