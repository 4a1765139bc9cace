-- expired.lua — the lease-expiry hints of one shard that are due (by this server's clock).
--
-- KEYS[1]  one lease-expiry hint shard sf:leases:{<tag>} (fleet-wide; the caller asks every shard)
--
-- ARGV[1]  at most this many members
--
-- Returns {member, score, member, score, ...}: hint members 'tenant:id' (hints only: reclaim.lua decides).

return redis.call('ZRANGE', KEYS[1], '-inf', clock(), 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]), 'WITHSCORES')
