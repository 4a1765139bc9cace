-- hints.lua — apply a batch of lease-hint updates to one shard, in order (store/_hints.py sends them).
--
-- KEYS[1]  one lease-expiry hint shard sf:leases:{<tag>}
--
-- ARGV     triples: op, member 'tenant:id', score (ms)
--          'a'  set the member's score (a lease this instance holds, until score)
--          'x'  set it only if the member is there (a live lease someone else holds; corrects an early hint)
--          'n'  add the member only if it is absent (repair: messages pending)
--          'd'  remove the member if its score is at most score (a lease freed or a conversation found idle;
--               a later lease's hint has a later score and stays)
--
-- Returns the number of triples applied.

local shard = KEYS[1]
for i = 1, #ARGV, 3 do
  local op, member, score = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 'a' then
    redis.call('ZADD', shard, score, member)
  elseif op == 'x' then
    redis.call('ZADD', shard, 'XX', score, member)
  elseif op == 'n' then
    redis.call('ZADD', shard, 'NX', score, member)
  else
    local current = redis.call('ZSCORE', shard, member)
    if current and tonumber(current) <= tonumber(score) then
      redis.call('ZREM', shard, member)
    end
  end
end
return #ARGV / 3
