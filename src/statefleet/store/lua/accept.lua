-- accept.lua — durably append a message to a conversation's inbox, and take the lease if it is free.
--
-- KEYS[1]  meta hash            sf:{tenant:id}:m
-- KEYS[2]  history list         sf:{tenant:id}:h
-- KEYS[3]  state string         sf:{tenant:id}:s
-- KEYS[4]  inbox list           sf:{tenant:id}:i
-- KEYS[5]  message receipt      sf:{tenant:id}:r:m:<message id>
-- KEYS[6]  idempotency receipt  sf:{tenant:id}:r:k:<idempotency key> — only when the message has a key
--
-- ARGV[1]  the message as an inbox entry (see _prelude.lua)
-- ARGV[2]  pending receipt for the message id (JSON)
-- ARGV[3]  the caller's agent version
-- ARGV[4]  the caller's instance id (lease owner if it takes the lease)
-- ARGV[5]  double-texting policy: 'enqueue' | 'reject' | 'interrupt'
-- ARGV[6]  lease ttl, ms
-- ARGV[7]  conversation idle ttl, ms
-- ARGV[8]  idempotency receipt ttl, ms
-- ARGV[9]  message receipt ttl, ms
-- ARGV[10] inbox capacity
-- ARGV[11] the version a new conversation is pinned to ('' or the caller's: the caller's); when another, a new
--          conversation is not created: {'W', that version}
--
-- Returns one of
--   {'D', receipt}              the idempotency key was seen before; nothing accepted
--   {'W', version}              pinned to (or, new, assigned) another version; nothing accepted
--   {'R', owner|nil}            policy reject while busy, or inbox full; nothing accepted
--   {'Q', owner}                queued behind a live lease
--   {'L', token, attempt, turns, version, state|nil, head body|nil, lease expiry ms, history...}
--                               leased; head body is nil when the head is this very message
-- The caller indexes a new lease in the fleet-wide hints (store/_hints.py); this script touches one slot.

local meta, hist, state, inbox, receipt = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local kreceipt = KEYS[6]
local entry, version, owner, policy = ARGV[1], ARGV[3], ARGV[4], ARGV[5]
local now_ms, now_us = clock()

local r = redis.call('HMGET', meta, 'v', 'c', 'n', 'f', 'o', 'x', 'p')
local v, created, holder = r[1], r[2], r[5]
if created and kreceipt then
  local seen = get_receipt(kreceipt, created)
  if seen then
    return {'D', seen}
  end
end
if v and v ~= version then
  return {'W', v}
end
if not v and ARGV[11] ~= '' and ARGV[11] ~= version then
  return {'W', ARGV[11]}
end

local live = holder and tonumber(r[6] or 0) > now_ms
local depth = 0
if v then
  depth = redis.call('LLEN', inbox)
end
if (policy == 'reject' and (live or depth > 0)) or depth >= tonumber(ARGV[10]) then
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
if kreceipt then
  local _, _, prefix = split_entry(entry)
  put_receipt(kreceipt, created, prefix .. '"pending",null]', 'PX', ARGV[8])
end

if not live then
  local attempt, head = tonumber(r[7] or 0), false
  if depth == 0 then
    attempt = 0
  else
    -- The head is an older message a dead owner left; ours waits behind it, so its caller polls.
    head = redis.call('LINDEX', inbox, 0)
    put_receipt(receipt, created, ARGV[2], 'PX', ARGV[9])
  end
  attempt = attempt + 1
  local token = fence + 1
  local expiry = now_ms + tonumber(ARGV[6])
  redis.call('HSET', meta, 'f', int(token), 't', int(token), 'o', owner, 'x', int(expiry), 'p', attempt)
  redis.call('HDEL', meta, 'I')
  touch(ARGV[7], meta, hist, state, inbox)
  return work('L', token, attempt, tonumber(r[3] or 0), version, head, hist, state, expiry)
end

put_receipt(receipt, created, ARGV[2], 'PX', ARGV[9])
if policy == 'interrupt' then
  redis.call('HSET', meta, 'I', 1)
end
touch(ARGV[7], meta, hist, state, inbox)
return {'Q', holder}
