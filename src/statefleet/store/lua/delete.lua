-- delete.lua — remove a conversation. Its receipts name the deleted incarnation in their value, so no later
-- incarnation takes them for its own; they expire on their own TTL.
--
-- KEYS[1]  meta hash          sf:{tenant:id}:m
-- KEYS[2]  history list       sf:{tenant:id}:h
-- KEYS[3]  state string       sf:{tenant:id}:s
-- KEYS[4]  inbox list         sf:{tenant:id}:i
-- KEYS[5]  event stream       sf:{tenant:id}:e
--
-- ARGV: none.
--
-- Returns {existed, until, version}: existed is 1 when the conversation existed; until is the later of now and its
-- lease's expiry, in ms (the caller drops a lease hint not later than that: a lease granted after this
-- delete expires later, see store/_hints.py).

local existed = redis.call('EXISTS', KEYS[1])
local r = redis.call('HMGET', KEYS[1], 'x', 'v')
local expiry = tonumber(r[1] or 0)
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
local now_ms = clock()
return {existed, math.max(now_ms, expiry), r[2] or ''}
