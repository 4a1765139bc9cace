-- release.lua — give a lease back without committing; pending messages become reclaimable at once.
--
-- KEYS[1]  meta hash          sf:{tenant:id}:m
-- KEYS[2]  inbox list         sf:{tenant:id}:i
-- KEYS[3]  lease-expiry hints sf:leases:<shard> — OUTSIDE the conversation's slot (fine on standalone and
--          Sentinel; Redis Cluster would need it routed separately — not supported yet).
--
-- ARGV[1]  lease owner
-- ARGV[2]  lease token
-- ARGV[3]  hint member 'tenant:id'
-- ARGV[4]  '1' when the head message's handler started under this lease, '0' when it never did (the grant
--          is then not counted as an attempt)
--
-- Returns 1 when the lease was ours and is now free, 0 when it was not ours (nothing written).

local meta, inbox, hints = KEYS[1], KEYS[2], KEYS[3]

local r = redis.call('HMGET', meta, 'o', 't', 'p')
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] then
  return 0
end
redis.call('HDEL', meta, 'o', 'x', 'I')
if ARGV[4] == '0' and tonumber(r[3] or 0) > 0 then
  redis.call('HSET', meta, 'p', tonumber(r[3]) - 1)
end
if redis.call('LLEN', inbox) > 0 then
  -- Due now: the sweeper picks it up on its next pass.
  redis.call('ZADD', hints, 0, ARGV[3])
else
  redis.call('ZREM', hints, ARGV[3])
end
return 1
