-- expired.lua — conversations whose lease expiry hint is due (server clock), across the hint shards.
--
-- KEYS[1 ..] lease-expiry hint shards sf:leases:<shard>, in the order to visit them (the caller rotates
--            the start so that no shard is starved). Fleet-wide keys: fine on standalone and Sentinel;
--            Redis Cluster would need one call per shard — not supported yet.
--
-- ARGV[1]  at most this many members
--
-- Returns hint members 'tenant:id' (hints only: reclaim.lua decides).

local limit = tonumber(ARGV[1])
local now_ms = clock()
local out = {}
for _, shard in ipairs(KEYS) do
  if #out >= limit then
    break
  end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', shard, '-inf', now_ms, 'LIMIT', 0, limit - #out)) do
    out[#out + 1] = member
  end
end
return out
