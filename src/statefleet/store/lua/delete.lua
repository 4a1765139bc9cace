-- delete.lua — remove a conversation. Its receipts are named after the deleted incarnation, so no later
-- incarnation sees them; they expire on their own TTL.
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
--
-- ARGV[1]  hint member 'tenant:id'
--
-- Returns 1 when the conversation existed, else 0.

local existed = redis.call('EXISTS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('HDEL', KEYS[7], ARGV[1])
return existed
