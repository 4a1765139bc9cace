-- reclaim.lua — take over the lease of a conversation whose owner stopped renewing it, with a new token.
-- A message started max-attempts times without committing fails instead of running again.
--
-- KEYS[1]  meta hash            sf:{tenant:id}:m
-- KEYS[2]  history list         sf:{tenant:id}:h
-- KEYS[3]  state string         sf:{tenant:id}:s
-- KEYS[4]  inbox list           sf:{tenant:id}:i
-- KEYS[5]  event stream         sf:{tenant:id}:e
-- KEYS[6 ..] receipts of the head message, when the caller knows it has to fail: sf:{tenant:id}:r:m:<id> and
--          (if it has an idempotency key) sf:{tenant:id}:r:k:<key>. When the head must fail and they are
--          not all here, nothing is written and {'K', names...} asks for them.
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
-- ARGV[10] outcome receipt ttl, ms (a failed message's receipt, when no waiter made one)
-- ARGV[11] the caller's agent version ('': any): a conversation pinned to another is left alone
--
-- Returns one of
--   {'-', expiry, now}   nothing to take over: the lease is live until expiry ms, or (expiry 0) nothing is
--                        pending; now is the server time in ms
--   {'K', names...}      the head message must fail and its receipt keys are missing from KEYS
--   {'V', version, now}  pinned to another version than the caller's; nothing changed
--   {'T:' .. previous owner (or ''), token, attempt, turns, version, state|nil, head body, lease expiry ms,
--    history...}
-- The caller updates the fleet-wide lease hint (store/_hints.py); this script touches one slot.

local meta, hist, state, inbox, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local owner = ARGV[1]
local conversation_ttl = ARGV[3]

local r = redis.call('HMGET', meta, 'v', 'c', 'n', 'f', 'o', 'x', 'p')
local v, created, holder = r[1], r[2], r[5]
local now_ms = clock()
if not v then
  return {'-', 0, now_ms}  -- gone: deleted, or expired with its inbox
end
if ARGV[11] ~= '' and v ~= ARGV[11] then
  return {'V', v, now_ms}  -- only an instance of the conversation's own version ever runs its turns
end
local expires = tonumber(r[6] or 0)
if holder and expires > now_ms then
  return {'-', int(expires), now_ms}
end
local depth = redis.call('LLEN', inbox)
if depth == 0 then
  if holder then
    redis.call('HDEL', meta, 'o', 'x')
    touch(conversation_ttl, meta, hist, state, inbox)
  end
  return {'-', 0, now_ms}
end

local attempts = tonumber(r[7] or 0)
if attempts >= tonumber(ARGV[6]) then
  -- A message that keeps killing its instance must not block the conversation forever: it fails, and the
  -- next one (if any) starts afresh.
  local id, kname, prefix = split_entry(redis.call('LINDEX', inbox, 0))
  local given = {}
  for i = 6, #KEYS do
    given[KEYS[i]] = true
  end
  local mreceipt, kreceipt = ARGV[9] .. 'm:' .. id, ARGV[9] .. kname
  if not given[mreceipt] or (kname ~= '' and not given[kreceipt]) then
    if kname ~= '' then
      return {'K', 'm:' .. id, kname}
    end
    return {'K', 'm:' .. id}
  end
  redis.call('LPOP', inbox)
  depth = depth - 1
  attempts = 0
  local err = '{"code":"too_many_attempts","message":' .. cjson.encode(
    "message '" .. id .. "' was started " .. ARGV[6] .. ' times without committing; giving up') .. '}'
  local receipt = prefix .. '"failed",{"error":' .. err .. '}]'
  if kname ~= '' then
    put_receipt(kreceipt, created, receipt, 'PX', ARGV[4])
  end
  if not put_receipt(mreceipt, created, receipt, 'PX', ARGV[5], 'XX') then
    put_receipt(mreceipt, created, receipt, 'PX', ARGV[10])
  end
  redis.call('XADD', events, 'MAXLEN', ARGV[7], '*', 'd',
    '{"type":"error","message_id":' .. cjson.encode(id) .. ',' .. string.sub(err, 2))
  redis.call('PEXPIRE', events, ARGV[8])
  if depth == 0 then
    redis.call('HDEL', meta, 'o', 'x')
    redis.call('HSET', meta, 'p', 0)
    touch(conversation_ttl, meta, hist, state, inbox)
    return {'-', 0, now_ms}
  end
end

local token = tonumber(r[4] or 0) + 1
local attempt = attempts + 1
local expiry = now_ms + tonumber(ARGV[2])
redis.call('HSET', meta, 'f', int(token), 't', int(token), 'o', owner, 'x', int(expiry), 'p', attempt)
redis.call('HDEL', meta, 'I')
touch(conversation_ttl, meta, hist, state, inbox)
return work('T:' .. (holder or ''), token, attempt, tonumber(r[3] or 0), v, redis.call('LINDEX', inbox, 0),
  hist, state, expiry)
