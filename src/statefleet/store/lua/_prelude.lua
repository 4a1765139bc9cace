-- _prelude.lua — helpers prepended to every statefleet script (store/redis.py joins them). Touches no key.
--
-- KEYS: none.  ARGV: none.
--
-- A conversation's meta hash (sf:{tenant:id}:m) has one-letter fields so it stays listpack-encoded:
--   v  pinned agent version
--   c  created, µs since the epoch (server clock); also names this incarnation's receipts, so deleting
--      or expiring the meta hash orphans the old receipts (they expire on their own TTL)
--   a  last active, µs
--   n  turns committed
--   f  last fencing token handed out: strictly increasing for the life of the conversation, and starting at
--      the incarnation's creation time in µs, so a later incarnation's tokens are above an earlier one's
--   o  lease owner (absent: the lease is free)
--   t  the current lease's token
--   x  lease expiry, ms (server clock)
--   p  starts of the message at the head of the inbox
--   I  present when a newer message asked to interrupt the running turn
--
-- An inbox entry is '<#id>:<#kname>:<#receipt>:' .. id .. kname .. receipt .. body, where the lengths are
-- in bytes, kname is the idempotency receipt name ('k:<key>', or empty), receipt is the message's receipt
-- prefix '[<id json>,<fingerprint json>,' (a receipt is '[id, fingerprint, status, result]'), and body is
-- the message as JSON. Scripts read what they need without decoding client JSON.

local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end

local function int(n)
  return string.format('%d', n)
end

-- id, receipt name of its idempotency key ('' if none), receipt prefix, body (the message JSON).
local function split_entry(entry)
  local a, b, c, at = string.match(entry, '^(%d+):(%d+):(%d+):()')
  a, b, c = tonumber(a), tonumber(b), tonumber(c)
  return string.sub(entry, at, at + a - 1),
         string.sub(entry, at + a, at + a + b - 1),
         string.sub(entry, at + a + b, at + a + b + c - 1),
         string.sub(entry, at + a + b + c)
end

-- Receipts are stored as '<created>:' .. receipt JSON, created naming the incarnation that wrote them.
local function put_receipt(key, created, receipt, ...)
  return redis.call('SET', key, created .. ':' .. receipt, ...)
end

-- The receipt JSON at key if this incarnation wrote it, else false (an earlier incarnation's is not ours).
local function get_receipt(key, created)
  local v = redis.call('GET', key)
  if v and string.sub(v, 1, #created + 1) == created .. ':' then
    return string.sub(v, #created + 2)
  end
  return false
end

-- The receipt key prefix 'sf:{tenant:id}:r:', from a message receipt key 'sf:{tenant:id}:r:m:<id>'.
local function receipt_prefix(message_receipt_key, id)
  return string.sub(message_receipt_key, 1, #message_receipt_key - #id - 2)
end

-- Refresh the idle TTL of the conversation's own keys (Redis skips the ones that do not exist).
local function touch(ttl_ms, meta, hist, state, inbox)
  redis.call('PEXPIRE', meta, ttl_ms)
  redis.call('PEXPIRE', hist, ttl_ms)
  redis.call('PEXPIRE', state, ttl_ms)
  redis.call('PEXPIRE', inbox, ttl_ms)
end

-- What a lease holder needs to run the head message:
-- {tag, token, attempt, turns, version, state|false, message body|false, lease expiry ms, history...}.
local function work(tag, token, attempt, turns, version, entry, hist, state, expiry)
  local body = false
  if entry then
    local _, _, _, b = split_entry(entry)
    body = b
  end
  local out = {tag, token, attempt, turns, version, redis.call('GET', state) or false, body, int(expiry)}
  for _, utterance in ipairs(redis.call('LRANGE', hist, 0, -1)) do
    out[#out + 1] = utterance
  end
  return out
end
