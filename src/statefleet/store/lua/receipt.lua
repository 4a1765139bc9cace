-- receipt.lua — the receipt of one message of the conversation's current incarnation.
--
-- KEYS[1]  meta hash          sf:{tenant:id}:m
-- KEYS[2]  message receipt    sf:{tenant:id}:r:m:<message id>
--
-- ARGV: none.
--
-- Returns the receipt JSON '[id, fingerprint, status, result]', or nil.

local created = redis.call('HGET', KEYS[1], 'c')
if not created then
  return false
end
return get_receipt(KEYS[2], created)
