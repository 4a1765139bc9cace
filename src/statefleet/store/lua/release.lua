-- release.lua — give a lease back without committing; pending messages become reclaimable at once.
--
-- KEYS[1]  meta hash          sf:{tenant:id}:m
-- KEYS[2]  inbox list         sf:{tenant:id}:i
--
-- ARGV[1]  lease owner
-- ARGV[2]  lease token
-- ARGV[3]  '1' when the head message's handler started under this lease, '0' when it never did (the grant
--          is then not counted as an attempt)
--
-- Returns {released, pending, expiry}: released is 1 when the lease was ours and is now free (0: it was not
-- ours, nothing written); pending is 1 when messages wait (the caller marks the hint due now, see
-- store/_hints.py); expiry is the freed lease's expiry in ms.

local meta, inbox = KEYS[1], KEYS[2]

local r = redis.call('HMGET', meta, 'o', 't', 'p', 'x')
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] then
  return {0, 0, 0}
end
redis.call('HDEL', meta, 'o', 'x', 'I')
if ARGV[3] == '0' and tonumber(r[3] or 0) > 0 then
  redis.call('HSET', meta, 'p', tonumber(r[3]) - 1)
end
if redis.call('LLEN', inbox) > 0 then
  return {1, 1, r[4] or 0}
end
return {1, 0, r[4] or 0}
