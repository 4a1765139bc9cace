-- commit.lua — apply a finished turn under its fencing token, then hand the lease on or free it.
--
-- KEYS[1]  meta hash            sf:{tenant:id}:m
-- KEYS[2]  history list         sf:{tenant:id}:h
-- KEYS[3]  state string         sf:{tenant:id}:s
-- KEYS[4]  inbox list           sf:{tenant:id}:i
-- KEYS[5]  event stream         sf:{tenant:id}:e
-- KEYS[6]  message receipt      sf:{tenant:id}:r:m:<message id>
-- KEYS[7]  idempotency receipt  sf:{tenant:id}:r:k:<idempotency key> of that message — when it has a key. If
--          the message has one and KEYS[7] does not name it, nothing is written and {'K', name} asks for it.
--
-- ARGV[1]  lease owner
-- ARGV[2]  lease token
-- ARGV[3]  id of the message the turn ran (must head the inbox)
-- ARGV[4]  outcome: 'committed' | 'failed' | 'cancelled'
-- ARGV[5]  new state JSON, or '' to keep it
-- ARGV[6]  result JSON, stored in the message's receipts
-- ARGV[7]  history window (utterances kept)
-- ARGV[8]  lease ttl, ms
-- ARGV[9]  conversation idle ttl, ms
-- ARGV[10] idempotency receipt ttl, ms
-- ARGV[11] message receipt ttl, ms
-- ARGV[12] event log length
-- ARGV[13] event log ttl, ms
-- ARGV[14] outcome receipt ttl, ms: how long the message's receipt is kept when no waiter made one
-- ARGV[15] U, the number of utterances that follow
-- ARGV[16 .. 15+U]  utterances to append to history (JSON), only used when committed
-- ARGV[16+U ..]     events to append to the event log (JSON)
--
-- Returns one of
--   {'F'}                   fenced: the lease is not current or the message does not head the inbox; nothing written
--   {'K', name}             the message's idempotency receipt 'k:<key>' is not in KEYS; nothing written
--   {'C', turns, expiry}    applied; the inbox is empty and the lease (which expired at expiry ms) is free
--   {'N', token, attempt, turns, version, state|nil, head body, lease expiry ms, history...}
--                           applied; the same lease runs on with the next message
-- The caller updates the fleet-wide lease hint (store/_hints.py); this script touches one slot.

local meta, hist, state, inbox, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local owner, token, id, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local r = redis.call('HMGET', meta, 'o', 't', 'c', 'n', 'v', 'x')
if r[1] ~= owner or r[2] ~= token then
  return {'F'}
end
local head = redis.call('LINDEX', inbox, 0)
if not head then
  return {'F'}
end
local head_id, kname, prefix = split_entry(head)
if head_id ~= id then
  return {'F'}
end
local kreceipt = false
if kname ~= '' then
  kreceipt = receipt_prefix(KEYS[6], id) .. kname
  if KEYS[7] ~= kreceipt then
    return {'K', kname}
  end
end
local now_ms, now_us = clock()
redis.call('LPOP', inbox)

local turns = tonumber(r[4])
local utterances = tonumber(ARGV[15])
if outcome == 'committed' then
  turns = turns + 1
  if utterances > 0 then
    redis.call('RPUSH', hist, unpack(ARGV, 16, 15 + utterances))
  end
  local window = tonumber(ARGV[7])
  if window > 0 then
    redis.call('LTRIM', hist, -window, -1)
  else
    redis.call('DEL', hist)
  end
  if ARGV[5] ~= '' then
    redis.call('SET', state, ARGV[5])
  end
end
redis.call('HSET', meta, 'n', turns, 'a', int(now_us), 'p', 0)
redis.call('HDEL', meta, 'I')

local created = r[3]
local done = prefix .. '"' .. outcome .. '",' .. ARGV[6] .. ']'
if kreceipt then
  put_receipt(kreceipt, created, done, 'PX', ARGV[10])
end
-- A waiter's receipt (created at accept) keeps its ttl; otherwise the outcome is kept for a short while, so an
-- owner whose reply to this very call was lost can read back what happened.
if not put_receipt(KEYS[6], created, done, 'PX', ARGV[11], 'XX') then
  put_receipt(KEYS[6], created, done, 'PX', ARGV[14])
end

if #ARGV > 15 + utterances then
  for i = 16 + utterances, #ARGV do
    redis.call('XADD', events, 'MAXLEN', ARGV[12], '*', 'd', ARGV[i])
  end
  redis.call('PEXPIRE', events, ARGV[13])
end

if redis.call('LLEN', inbox) > 0 then
  local expiry = now_ms + tonumber(ARGV[8])
  redis.call('HSET', meta, 'x', int(expiry), 'p', 1)
  touch(ARGV[9], meta, hist, state, inbox)
  return work('N', tonumber(token), 1, turns, r[5], redis.call('LINDEX', inbox, 0), hist, state, expiry)
end
redis.call('HDEL', meta, 'o', 'x')
touch(ARGV[9], meta, hist, state, inbox)
return {'C', turns, r[6] or 0}
