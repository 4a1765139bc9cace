-- receipt.lua — the receipt of one message of the conversation's current incarnation.
--
-- KEYS[1]  meta hash          sf:{tenant:id}:m
-- Receipts sf:{tenant:id}:r:<created>:<name> are built from ARGV[1]; they share the conversation's slot.
--
-- ARGV[1]  receipt key prefix sf:{tenant:id}:r:
-- ARGV[2]  receipt name, 'm:<message id>'
--
-- Returns the receipt JSON '[id, fingerprint, status, result]', or nil.

local created = redis.call('HGET', KEYS[1], 'c')
if not created then
  return false
end
return redis.call('GET', ARGV[1] .. created .. ':' .. ARGV[2])
