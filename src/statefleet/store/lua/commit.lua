-- commit.lua — apply a finished turn under its fencing token, then hand the lease on or free it.
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
-- Receipts sf:{tenant:id}:r:<created>:<name> are built from ARGV[13]; they share the conversation's slot.
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
-- ARGV[13] receipt key prefix sf:{tenant:id}:r:
-- ARGV[14] event log ttl, ms
-- ARGV[15] hint member 'tenant:id'
-- ARGV[16] outcome receipt ttl, ms: how long the message's receipt is kept when no waiter made one
-- ARGV[17] U, the number of utterances that follow
-- ARGV[18 .. 17+U]  utterances to append to history (JSON), only used when committed
-- ARGV[18+U ..]     events to append to the event log (JSON)
--
-- Returns one of
--   {'F'}              fenced: the lease is not current or the message does not head the inbox; nothing written
--   {'C', turns}       applied; the inbox is empty and the lease is free
--   {'N', token, attempt, turns, version, state|nil, head body, history...}
--                      applied; the same lease runs on with the next message

local meta, hist, state, inbox, events, hints = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local owner, token, id, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local r = redis.call('HMGET', meta, 'o', 't', 'c', 'n', 'v')
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
local now_ms, now_us = clock()
redis.call('LPOP', inbox)
count_pending(KEYS[7], ARGV[15], inbox)

local turns = tonumber(r[4])
local utterances = tonumber(ARGV[17])
if outcome == 'committed' then
  turns = turns + 1
  if utterances > 0 then
    redis.call('RPUSH', hist, unpack(ARGV, 18, 17 + utterances))
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

local receipts = ARGV[13] .. r[3] .. ':'
local done = prefix .. '"' .. outcome .. '",' .. ARGV[6] .. ']'
if kname ~= '' then
  redis.call('SET', receipts .. kname, done, 'PX', ARGV[10])
end
-- A waiter's receipt (created at accept) keeps its ttl; otherwise the outcome is kept for a short while, so an
-- owner whose reply to this very call was lost can read back what happened.
if not redis.call('SET', receipts .. 'm:' .. id, done, 'PX', ARGV[11], 'XX') then
  redis.call('SET', receipts .. 'm:' .. id, done, 'PX', ARGV[16])
end

if #ARGV > 17 + utterances then
  for i = 18 + utterances, #ARGV do
    redis.call('XADD', events, 'MAXLEN', ARGV[12], '*', 'd', ARGV[i])
  end
  redis.call('PEXPIRE', events, ARGV[14])
end

if redis.call('LLEN', inbox) > 0 then
  local expiry = now_ms + tonumber(ARGV[8])
  redis.call('HSET', meta, 'x', int(expiry), 'p', 1)
  redis.call('ZADD', hints, expiry, ARGV[15])
  touch(ARGV[9], meta, hist, state, inbox)
  return work('N', tonumber(token), 1, turns, r[5], redis.call('LINDEX', inbox, 0), hist, state)
end
redis.call('HDEL', meta, 'o', 'x')
redis.call('ZREM', hints, ARGV[15])
touch(ARGV[9], meta, hist, state, inbox)
return {'C', turns}
