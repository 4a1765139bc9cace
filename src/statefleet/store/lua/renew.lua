-- renew.lua — extend a held lease; tell whether it is still ours and whether an interrupt was asked.
--
-- KEYS[1]  meta hash          sf:{tenant:id}:m
-- KEYS[2]  history list       sf:{tenant:id}:h
-- KEYS[3]  state string       sf:{tenant:id}:s
-- KEYS[4]  inbox list         sf:{tenant:id}:i
--
-- ARGV[1]  lease owner
-- ARGV[2]  lease token
-- ARGV[3]  lease ttl, ms
-- ARGV[4]  conversation idle ttl, ms
--
-- Returns {kept, interrupt, expiry}: kept is 1 when the lease is still ours (and now extended to expiry ms),
-- else 0; interrupt is 1 when a newer message asked to interrupt the running turn.

local meta, hist, state, inbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local r = redis.call('HMGET', meta, 'o', 't', 'I')
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] then
  return {0, 0, 0}
end
local now_ms = clock()
local expiry = now_ms + tonumber(ARGV[3])
redis.call('HSET', meta, 'x', int(expiry))
touch(ARGV[4], meta, hist, state, inbox)
if r[3] then
  return {1, 1, expiry}
end
return {1, 0, expiry}
